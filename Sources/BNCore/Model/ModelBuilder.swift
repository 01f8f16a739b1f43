/// Settings that shape the layers a spec builds but are not part of the spec string.
public struct BuildOptions: Sendable {
    /// BatchNorm: decay m of the running averages, epsilon, and the variance fed into running_var.
    public var bnMomentum: Double
    public var bnEps: Double
    public var runningVariance: BatchNorm1D<Float>.RunningVariance
    /// Weights of every fc layer (biases start at zero; norm gains at one).
    public var initializer: Initializer
    /// Fuse an fc followed by a sigmoid, and a 2-D bn followed by a relu, into one layer each
    /// (training); false builds one network layer per spec layer (gradient checks report layer
    /// by layer; traces of a pre-activation need it).
    public var fuse = true

    public init(bnMomentum: Double = 0.9, bnEps: Double = 1e-5, runningVariance: BatchNorm1D<Float>.RunningVariance = .biased, initializer: Initializer = .glorot) {
        self.bnMomentum = bnMomentum
        self.bnEps = bnEps
        self.runningVariance = runningVariance
        self.initializer = initializer
    }
}

extension ModelSpec {
    /// Whether spec layer i may be computed together with layer i + 1 by one network layer when
    /// building fused: an fc followed by a sigmoid (Dense with the sigmoid fused), a bn followed
    /// by a relu (BatchNorm2D with the ReLU fused, when the bn receives images).
    public func mayFuseWithNext(_ i: Int) -> Bool {
        guard i >= 0, i + 1 < layers.count else { return false }
        switch (layers[i], layers[i + 1]) {
        case (.fc, .activation(.sigmoid)), (.batchNorm, .activation(.relu)): return true
        default: return false
        }
    }

    /// Builds the network for `inputs` features and `classes` classes. Tensors are named as
    /// PyTorch's `state_dict` of the equivalent `nn.Sequential` names them: by the layer's
    /// index in the spec (`0.weight`, `2.running_mean`, ...), whatever is fused.
    ///
    /// The fc weights are drawn from `rng` in layer order (each in PyTorch's logical (out, in)
    /// row-major order); dropout masks come from `dropoutRNG`.
    ///
    /// Choices made for speed, invisible in results: an fc followed by a sigmoid becomes one
    /// Dense with the sigmoid fused; a 2-D bn followed by a relu becomes one BatchNorm2D with
    /// the ReLU fused; a Dense that is the network's first layer stores its
    /// weight transposed (its forward product is the step's largest and runs faster as a plain
    /// NN product; its input gradient, the product that layout slows, is never computed).
    public func build<T: BLASScalar>(
        _: T.Type = T.self, inputs: Int, classes: Int, image: ImageShape? = nil, options: BuildOptions = BuildOptions(),
        rng: inout SplitMix64, dropoutRNG: SplitMix64 = SplitMix64(seed: 0)
    ) throws -> Network<T> {
        let shapes = try shapes(inputs: inputs, classes: classes, image: image)
        let widths = shapes.map(\.count)
        var shape = try inputShape(inputs: inputs, image: image)
        let stream = RandomStream(dropoutRNG)
        var built: [any Layer<T>] = []
        var specIndices: [Int] = []
        var width = inputs
        var i = 0
        let runningVariance = BatchNorm1D<T>.RunningVariance(rawValue: options.runningVariance.rawValue)!
        while i < layers.count {
            let name = "\(i)"
            let out = widths[i]
            specIndices.append(i)
            switch layers[i] {
            case .fc:
                let fuseSigmoid = options.fuse && mayFuseWithNext(i)
                let dense = Dense<T>(
                    inFeatures: width, outFeatures: out, activation: fuseSigmoid ? .sigmoid : .identity,
                    weightLayout: built.isEmpty ? .inOut : .outIn, name: name)
                options.initializer.initialize(dense, rng: &rng)
                built.append(dense)
                if fuseSigmoid { i += 1 }
            case let .activation(kind):
                built.append(Activation<T>(kind, features: out))
            case .batchNorm:
                // BatchNorm1D over features, or BatchNorm2D over channels: from the shape it receives.
                if case let .image(s) = shape {
                    let fuseReLU = options.fuse && mayFuseWithNext(i)
                    built.append(BatchNorm2D<T>(shape: s, momentum: T(options.bnMomentum), eps: T(options.bnEps), runningVariance: runningVariance, fusedReLU: fuseReLU, name: name))
                    if fuseReLU {
                        shape = shapes[i + 1]
                        i += 1
                    }
                } else {
                    built.append(BatchNorm1D<T>(features: out, momentum: T(options.bnMomentum), eps: T(options.bnEps), runningVariance: runningVariance, name: name))
                }
            case let .conv(o, k, st, pd):
                guard case let .image(s) = shape else { preconditionFailure("checked by shapes()") }
                let conv = Conv2D<T>(input: s, outChannels: o, kernel: k, stride: st, padding: pd, name: name)
                options.initializer.initialize(conv, rng: &rng)
                built.append(conv)
            case let .pool(mx, k, st):
                guard case let .image(s) = shape else { preconditionFailure("checked by shapes()") }
                built.append(Pool2D<T>(mx ? .max : .average, input: s, kernel: k, stride: st))
            case .globalAvgPool:
                guard case let .image(s) = shape else { preconditionFailure("checked by shapes()") }
                built.append(Pool2D<T>(.average, input: s, kernel: nil))
            case .layerNorm:
                built.append(LayerNorm<T>(features: out, name: name))
            case let .dropout(p):
                built.append(Dropout<T>(probability: p, features: out, stream: stream))
            }
            width = out
            shape = shapes[i]
            i += 1
        }
        let net = Network(layers: built, classes: classes, randomStream: stream)
        net.specIndices = specIndices
        return net
    }
}
