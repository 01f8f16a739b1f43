import CKernels

/// A seeded random stream shared by the layers that draw random numbers while training
/// (Dropout), owned by the network so that a checkpoint can save and restore its state.
public final class RandomStream {
    public var generator: SplitMix64
    public init(_ generator: SplitMix64) { self.generator = generator }
}

/// Inverted dropout, as PyTorch's `nn.Dropout(p)`: in training each element is zeroed with
/// probability p and the survivors are scaled by 1/(1-p), so the expected output equals the
/// input; in evaluation it is the identity (and returns its input unchanged, uncopied).
///     training: y = x * m,  m_ij = 0 with probability p, else 1/(1-p);  dx = dy * m.
/// Masks come from the network's `RandomStream` (one 64-bit draw per element: dropped when
/// the draw is below p * 2^64), so a seed gives the same masks and a resumed run continues
/// the same sequence.
public final class Dropout<T: BLASScalar>: Layer {
    public let features: Int
    public var inFeatures: Int { features }
    public var outFeatures: Int { features }
    public let probability: Double
    public var computesInputGradient = true
    public let parameters: [Parameter<T>] = []
    public let stream: RandomStream
    /// Tests: when true, a training forward reuses the previous mask instead of drawing a new
    /// one (so finite differences see a fixed function).
    public var freezeMask = false

    @usableFromInline let mask: Matrix<T>  // (N, D): 0 or 1/(1-p)
    @usableFromInline let output: Matrix<T>
    @usableFromInline let inputGrad: Matrix<T>
    @usableFromInline var lastForwardWasTraining = false
    @usableFromInline let threshold: UInt64
    @usableFromInline let scale: T

    public init(probability p: Double, features: Int, stream: RandomStream) {
        precondition(p >= 0 && p < 1, "dropout probability must be in [0, 1)")
        self.probability = p
        self.features = features
        self.stream = stream
        // p * 2^64 without overflow: p < 1, and the top value is clamped.
        let t = p * 18_446_744_073_709_551_616.0
        threshold = t >= 18_446_744_073_709_549_568.0 ? UInt64.max : UInt64(t)
        scale = T(1 / (1 - p))
        mask = Matrix(rows: 0, cols: features)
        output = Matrix(rows: 0, cols: features)
        inputGrad = Matrix(rows: 0, cols: features)
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forward(_ x: Matrix<T>, training: Bool) -> Matrix<T> {
        precondition(x.cols == features, "Dropout expects \(features) features, got \(x.cols)")
        lastForwardWasTraining = training
        guard training else { return x }
        let n = x.count
        output.resize(rows: x.rows)
        if !(freezeMask && mask.rows == x.rows) {
            mask.resize(rows: x.rows)
            let m = mask.data, t = threshold, s = scale
            if T.self == Float.self {
                // C, vectorized: value i takes the generator's (i+1)-th next(), as below.
                stream.generator.state = bn_dropout_mask_f32(float32Buffer(m), n, stream.generator.state, t, float32(s))
            } else {
                var g = stream.generator
                for i in 0..<n { m[i] = g.next() < t ? 0 : s }
                stream.generator = g
            }
        }
        let src = x.data, y = output.data, m = mask.data
        if T.self == Float.self {
            bn_multiply_f32(float32(src), float32(m), float32Buffer(y), n)
            return output
        }
        for i in 0..<n { y[i] = src[i] * m[i] }
        return output
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backward(_ dy: Matrix<T>) -> Matrix<T> {
        precondition(lastForwardWasTraining, "Dropout.backward needs a training-mode forward")
        precondition(dy.rows == mask.rows && dy.cols == features, "Dropout.backward: shape mismatch")
        inputGrad.resize(rows: dy.rows)
        let g = dy.data, m = mask.data, dx = inputGrad.data
        if T.self == Float.self {
            bn_multiply_f32(float32(g), float32(m), float32Buffer(dx), dy.count)
            return inputGrad
        }
        for i in 0..<dy.count { dx[i] = g[i] * m[i] }
        return inputGrad
    }
}
