import RealModule

/// Logistic sigmoid, element-wise: y = 1 / (1 + exp(-x)); dy/dx = y (1 - y).
public final class Sigmoid<T: BLASScalar>: Layer {
    public let inFeatures: Int
    public var outFeatures: Int { inFeatures }
    public var computesInputGradient = true
    @usableFromInline let output: Matrix<T>
    @usableFromInline let inputGrad: Matrix<T>

    public init(features: Int) {
        inFeatures = features
        output = Matrix(rows: 0, cols: features)
        inputGrad = Matrix(rows: 0, cols: features)
    }

    public var parameters: [Parameter<T>] { [] }

    /// x: (N, D) -> y: (N, D)
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forward(_ x: Matrix<T>, training: Bool) -> Matrix<T> {
        output.resize(rows: x.rows)
        let src = x.data, dst = output.data
        for i in 0..<x.count { dst[i] = 1 / (1 + T.exp(-src[i])) }
        return output
    }

    /// dx = dy * y * (1 - y), from the cached output y.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backward(_ dy: Matrix<T>) -> Matrix<T> {
        precondition(dy.rows == output.rows && dy.cols == inFeatures, "Sigmoid.backward: shape mismatch")
        inputGrad.resize(rows: dy.rows)
        let y = output.data, g = dy.data, dx = inputGrad.data
        for i in 0..<dy.count { dx[i] = g[i] * y[i] * (1 - y[i]) }
        return inputGrad
    }
}
