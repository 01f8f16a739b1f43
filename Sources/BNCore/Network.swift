/// A sequential stack of layers ending in fused softmax + cross-entropy.
public final class Network<T: BLASScalar> {
    public let layers: [any Layer<T>]
    public let loss: SoftmaxCrossEntropy<T>
    /// All learnable tensors, in layer order (gathered once).
    public let parameters: [Parameter<T>]
    /// All non-learnable state tensors (BN running statistics), in layer order.
    public let buffers: [Buffer<T>]

    public init(layers: [any Layer<T>], classes: Int) {
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
    }

    public var inputFeatures: Int { layers[0].inFeatures }
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

    /// Back-propagates dL/dlogits through every layer, writing each parameter's gradient.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backward(_ dlogits: Matrix<T>) {
        var g = dlogits
        for layer in layers.reversed() { g = layer.backward(g) }
    }

    /// Forward (training mode), loss and backward: fills every parameter's `grad`; returns the
    /// batch's mean loss. For inspection and checks; training uses the fused `trainStep`.
    @inlinable
    public func computeGradients(_ x: Matrix<T>, labels: UnsafePointer<Int32>) -> Double {
        let logits = forward(x, training: true)
        let l = loss.forwardBackward(logits: logits, labels: labels)
        backward(loss.logitsGrad)
        return l
    }

    /// One SGD step: forward (training mode), loss, then backward fused with the parameter
    /// update layer by layer. Same result as `computeGradients` + `SGD.step`, fewer passes
    /// over memory. Returns the batch's mean loss (from before the update).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func trainStep(_ x: Matrix<T>, labels: UnsafePointer<Int32>, optimizer: SGD<T>) -> Double {
        let logits = forward(x, training: true)
        let l = loss.forwardBackward(logits: logits, labels: labels)
        var g = loss.logitsGrad
        for layer in layers.reversed() { g = layer.backwardAndStep(g, learningRate: optimizer.learningRate) }
        return l
    }

    /// The reference network: Dense(inputs, hidden) -> Sigmoid -> [BatchNorm1D(hidden)] -> Dense(hidden, classes),
    /// with the sigmoid fused into the first Dense layer.
    /// Parameter names follow PyTorch's state_dict for the same `nn.Sequential`-like module
    /// (`fc1`, `bn`, `fc2`).
    public static func reference(
        inputs: Int, hidden: Int, classes: Int, batchNorm: Bool,
        bnMomentum: T = 0.9, bnEps: T = 1e-5, runningVariance: BatchNorm1D<T>.RunningVariance = .biased,
        initializer: Initializer, rng: inout SplitMix64
    ) -> Network<T> {
        // fc1's weight is stored transposed: its forward product is the step's largest and
        // runs faster untransposed (see Dense). fc2 stays as PyTorch stores it: transposed, its
        // input-gradient product ran about 25% slower in bnbench and its forward no faster.
        let fc1 = Dense<T>(inFeatures: inputs, outFeatures: hidden, activation: .sigmoid, weightLayout: .inOut, name: "fc1")
        let fc2 = Dense<T>(inFeatures: hidden, outFeatures: classes, name: "fc2")
        initializer.initialize(fc1, rng: &rng)
        initializer.initialize(fc2, rng: &rng)
        var layers: [any Layer<T>] = [fc1]
        if batchNorm {
            layers.append(BatchNorm1D<T>(features: hidden, momentum: bnMomentum, eps: bnEps, runningVariance: runningVariance, name: "bn"))
        }
        layers.append(fc2)
        return Network(layers: layers, classes: classes)
    }
}
