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
        return layers[i].facts.fusesWith(layers[i + 1].facts, input: nil)
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
    ///
    /// `kernels` is what the network's products and convolutions run on, shared by its
    /// layers: its caches (bf16 plans, scratch) are this network's own.
    public func build<T: BLASScalar>(
        _: T.Type = T.self, inputs: Int, classes: Int, image: ImageShape? = nil, options: BuildOptions = BuildOptions(),
        kernels: Kernels = Kernels(), rng: inout SplitMix64, dropoutRNG: SplitMix64 = SplitMix64(seed: 0)
    ) throws -> Network<T> {
        let shapes = try shapes(inputs: inputs, classes: classes, image: image)
        var shape = try inputShape(inputs: inputs, image: image)
        let stream = RandomStream(dropoutRNG)
        var built: [any Layer<T>] = []
        var specIndices: [Int] = []
        var i = 0
        while i < layers.count {
            specIndices.append(i)
            let facts = layers[i].facts
            // Fused, this layer computes the next one too (whose output shape it then has).
            let fused = options.fuse && i + 1 < layers.count && facts.fusesWith(layers[i + 1].facts, input: shape)
            var context = LayerBuildContext<T>(
                name: "\(i)", input: shape, output: shapes[i], isFirst: built.isEmpty, options: options, kernels: kernels,
                rng: rng, dropoutStream: stream)
            built.append(facts.build(&context, fused: fused))
            rng = context.rng
            if fused { i += 1 }
            shape = shapes[i]
            i += 1
        }
        let net = Network(layers: built, classes: classes, randomStream: stream)
        net.specIndices = specIndices
        return net
    }
}
