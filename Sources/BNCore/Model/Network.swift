/// A sequential stack of layers ending in fused softmax + cross-entropy: the model a
/// `ModelSpec` describes, or any list of layers whose widths chain.
public final class Network<T: BLASScalar> {
    public let layers: [any Layer<T>]
    public let loss: SoftmaxCrossEntropy<T>
    /// All learnable tensors, in layer order (gathered once).
    public let parameters: [Parameter<T>]
    /// All non-learnable state tensors (BN running statistics), in layer order.
    public let buffers: [Buffer<T>]
    /// Every BatchNorm layer, for the state a checkpoint keeps beyond tensors (step counts).
    public let batchNorms: [BatchNorm1D<T>]
    public let batchNorms2D: [BatchNorm2D<T>]
    /// Each BatchNorm layer's tensor prefix and step count (1-D and 2-D alike).
    public var batchNormSteps: [(name: String, steps: Int)] {
        batchNorms.map { ($0.name, $0.batchesTracked) } + batchNorms2D.map { ($0.name, $0.batchesTracked) }
    }

    /// Sets the step count of the BatchNorm layer with tensor prefix `name`.
    public func setBatchNormSteps(_ name: String, _ n: Int) {
        for b in batchNorms where b.name == name { b.batchesTracked = n }
        for b in batchNorms2D where b.name == name { b.batchesTracked = n }
    }
    /// The stream dropout masks are drawn from (saved and restored by checkpoints).
    public let randomStream: RandomStream
    /// For each layer, the index of the first spec layer it computes (an fc fused with its
    /// sigmoid computes two); set by the builder, else one layer per index.
    public internal(set) var specIndices: [Int]
    /// For each layer, itself when it can fuse the plain SGD update into its backward.
    @usableFromInline let sgdFused: [(any SGDFusedBackward<T>)?]

    public init(layers: [any Layer<T>], classes: Int, randomStream: RandomStream = RandomStream(SplitMix64(seed: 0))) {
        precondition(!layers.isEmpty, "a network needs at least one layer")
        for (a, b) in zip(layers, layers.dropFirst()) {
            precondition(a.outFeatures == b.inFeatures, "layer widths do not chain: \(a.outFeatures) -> \(b.inFeatures)")
        }
        precondition(layers.last!.outFeatures == classes, "the last layer must output one logit per class")
        self.layers = layers
        // Nothing consumes the first layer's input gradient; skip that product.
        layers[0].computesInputGradient = false
        loss = SoftmaxCrossEntropy(classes: classes)
        parameters = layers.flatMap { $0.parameters }
        buffers = layers.flatMap { $0.buffers }
        batchNorms = layers.compactMap { $0 as? BatchNorm1D<T> }
        batchNorms2D = layers.compactMap { $0 as? BatchNorm2D<T> }
        sgdFused = layers.map { $0 as? any SGDFusedBackward<T> }
        self.randomStream = randomStream
        specIndices = Array(layers.indices)
    }

    public var inputFeatures: Int { layers[0].inFeatures }

    /// The input image of a convolutional network (its first image layer's input).
    public var inputImage: ImageShape? {
        for l in layers {
            if let c = l as? Conv2D<T> { return c.input }
            if let p = l as? Pool2D<T> { return p.input }
            if let b = l as? BatchNorm2D<T> { return b.shape }
            if l is Dense<T> { return nil }
        }
        return nil
    }
    public var classes: Int { loss.classes }
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }

    /// x: (N, inputs) -> logits: (N, classes), in a buffer owned by the last layer.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forward(_ x: Matrix<T>, training: Bool) -> Matrix<T> {
        var h = x
        for layer in layers { h = layer.forward(h, training: training) }
        return h
    }

    /// Training forward through `layers[range]` only (a data-parallel step runs the layers
    /// between synchronised BN layers this way).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forward(_ x: Matrix<T>, layers range: Range<Int>) -> Matrix<T> {
        var h = x
        for i in range { h = layers[i].forward(h, training: true) }
        return h
    }

    /// Backward through `layers[range]`, last layer first; returns dL/d(input of the range).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backward(_ dy: Matrix<T>, layers range: Range<Int>) -> Matrix<T> {
        var g = dy
        for i in range.reversed() { g = layers[i].backward(g) }
        return g
    }

    /// Makes this network a replica of `model` (the same spec and options): every parameter
    /// value and buffer uses the model's storage, so the model's updates are the replica's.
    /// Gradients, activations and the dropout stream stay the replica's own.
    public func shareState(with model: Network<T>) {
        precondition(parameters.count == model.parameters.count && buffers.count == model.buffers.count, "a replica needs the model's layers")
        for (mine, theirs) in zip(parameters, model.parameters) {
            precondition(mine.name == theirs.name && mine.shape == theirs.shape, "replica tensor \(mine.name) does not match \(theirs.name)")
            mine.value.share(storageOf: theirs.value)
        }
        for (mine, theirs) in zip(buffers, model.buffers) {
            precondition(mine.name == theirs.name, "replica buffer \(mine.name) does not match \(theirs.name)")
            mine.value.share(storageOf: theirs.value)
        }
    }

    /// Back-propagates dL/dlogits through every layer, writing each parameter's gradient.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backward(_ dlogits: Matrix<T>) {
        var g = dlogits
        for layer in layers.reversed() { g = layer.backward(g) }
    }

    /// Forward (training mode), loss and backward: fills every parameter's `grad`; returns the
    /// batch's mean loss.
    @inlinable
    public func computeGradients(_ x: Matrix<T>, labels: UnsafePointer<Int32>) -> Double {
        let logits = forward(x, training: true)
        let l = loss.forwardBackward(logits: logits, labels: labels)
        backward(loss.logitsGrad)
        return l
    }

    /// One training step: forward (training mode), loss, backward, update. Returns the batch's
    /// mean loss (from before the update).
    ///
    /// With plain SGD, layers that can fold the update into their backward do (Dense writes
    /// -lr dW straight into W) and the rest are updated right after their own backward: the
    /// same result as `computeGradients` then `optimizer.step`, in fewer passes over memory
    /// (tested against that unfused path). Any other optimizer takes the unfused path.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func trainStep(_ x: Matrix<T>, labels: UnsafePointer<Int32>, optimizer: any Optimizer<T>, fuseSGD: Bool = true, clipNorm: T? = nil) -> Double {
        guard fuseSGD, clipNorm == nil, let sgd = optimizer as? SGD<T> else {
            // Unfused: every gradient first (clipping needs their global norm), then the update.
            let l = computeGradients(x, labels: labels)
            if let c = clipNorm { clipGradientNorm(parameters, maxNorm: c) }
            optimizer.step(parameters)
            return l
        }
        let logits = forward(x, training: true)
        let l = loss.forwardBackward(logits: logits, labels: labels)
        var g = loss.logitsGrad
        let lr = sgd.learningRate
        var i = layers.count - 1
        while i >= 0 {
            if let f = sgdFused[i] {
                g = f.backward(g, sgdLearningRate: lr)
            } else {
                g = layers[i].backward(g)
                sgd.step(layers[i].parameters)
            }
            i -= 1
        }
        return l
    }
}
