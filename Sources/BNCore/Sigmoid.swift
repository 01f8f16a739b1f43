import RealModule

/// Logistic sigmoid, element-wise: y = 1 / (1 + exp(-x)); dy/dx = y (1 - y).
/// The reference network fuses this into `Dense(activation: .sigmoid)`; the standalone layer
/// is for other architectures and as the unfused reference in tests.
public final class Sigmoid<T: BLASScalar>: Layer {
    public let inFeatures: Int
    public var outFeatures: Int { inFeatures }
    public var computesInputGradient = true
    @usableFromInline let output: Matrix<T>
    @usableFromInline let inputGrad: Matrix<T>
    @usableFromInline let zeroBias: Matrix<T>

    public init(features: Int) {
        inFeatures = features
        output = Matrix(rows: 0, cols: features)
        inputGrad = Matrix(rows: 0, cols: features)
        zeroBias = Matrix(rows: 1, cols: features)
    }

    public let parameters: [Parameter<T>] = []

    /// x: (N, D) -> y: (N, D)
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forward(_ x: Matrix<T>, training: Bool) -> Matrix<T> {
        output.resize(rows: x.rows)
        output.data.update(from: x.data, count: x.count)
        Elementwise.biasSigmoid(output.data, bias: zeroBias.data, rows: x.rows, cols: inFeatures)
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
