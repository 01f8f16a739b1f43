/// Fully connected layer: y = x W^T + b, with W: (out, in) as in PyTorch's `nn.Linear`.
public final class Dense<T: BLASScalar>: Layer {
    public let inFeatures: Int
    public let outFeatures: Int
    public let weight: Parameter<T>  // (out, in)
    public let bias: Parameter<T>  // (1, out)
    public var computesInputGradient = true

    /// The input of the most recent forward (owned by the caller; must stay unchanged until backward).
    @usableFromInline var input: Matrix<T>?
    @usableFromInline let output: Matrix<T>
    @usableFromInline let inputGrad: Matrix<T>

    public init(inFeatures: Int, outFeatures: Int, name: String) {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        weight = Parameter(name: "\(name).weight", value: Matrix(rows: outFeatures, cols: inFeatures))
        bias = Parameter(name: "\(name).bias", value: Matrix(rows: 1, cols: outFeatures))
        output = Matrix(rows: 0, cols: outFeatures)
        inputGrad = Matrix(rows: 0, cols: inFeatures)
    }

    public var parameters: [Parameter<T>] { [weight, bias] }

    /// x: (N, in) -> y: (N, out). The bias is broadcast into y first, then one GEMM adds x W^T.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forward(_ x: Matrix<T>, training: Bool) -> Matrix<T> {
        precondition(x.cols == inFeatures, "Dense expects \(inFeatures) input features, got \(x.cols)")
        let n = x.rows
        input = x
        output.resize(rows: n)
        let y = output.data, b = bias.value.data, d = outFeatures
        for i in 0..<n { (y + i * d).update(from: b, count: d) }
        T.gemm(
            transA: false, transB: true, m: n, n: d, k: inFeatures,
            alpha: 1, a: x.data, lda: inFeatures, b: weight.value.data, ldb: inFeatures,
            beta: 1, c: y, ldc: d)
        return output
    }

    /// dW = dy^T x: (out, in); db = sum over rows of dy; dx = dy W: (N, in).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backward(_ dy: Matrix<T>) -> Matrix<T> {
        guard let x = input else { preconditionFailure("Dense.backward called before forward") }
        let n = dy.rows, d = outFeatures
        precondition(n == x.rows && dy.cols == d, "Dense.backward: dy shape does not match the forward pass")
        T.gemm(
            transA: true, transB: false, m: d, n: inFeatures, k: n,
            alpha: 1, a: dy.data, lda: d, b: x.data, ldb: inFeatures,
            beta: 0, c: weight.grad.data, ldc: inFeatures)
        let db = bias.grad.data, g = dy.data
        db.update(repeating: 0, count: d)
        for i in 0..<n {
            let row = g + i * d
            for j in 0..<d { db[j] += row[j] }
        }
        inputGrad.resize(rows: n)
        if computesInputGradient {
            T.gemm(
                transA: false, transB: false, m: n, n: inFeatures, k: d,
                alpha: 1, a: g, lda: d, b: weight.value.data, ldb: inFeatures,
                beta: 0, c: inputGrad.data, ldc: inFeatures)
        }
        return inputGrad
    }
}
