import RealModule

/// Element-wise nonlinearities, each differentiated from its cached output y:
///     sigmoid: y = 1 / (1 + exp(-x)),  dy/dx = y (1 - y)
///     tanh:    y = tanh(x),            dy/dx = 1 - y^2
///     relu:    y = max(x, 0),          dy/dx = 1 where y > 0, else 0 (PyTorch's choice at x = 0)
public enum ActivationKind: String, CaseIterable, Sendable {
    case sigmoid, tanh, relu
}

/// An activation as its own layer (x: (N, D) -> y: (N, D)). dfn2 fuses its sigmoid into the
/// preceding Dense instead; this layer is the unfused reference for that fusion in the tests.
public final class Activation<T: BLASScalar>: Layer {
    public let kind: ActivationKind
    public let inFeatures: Int
    public var outFeatures: Int { inFeatures }
    public var computesInputGradient = true
    @usableFromInline let output: Matrix<T>
    @usableFromInline let inputGrad: Matrix<T>
    @usableFromInline let zeroBias: Matrix<T>

    public init(_ kind: ActivationKind, features: Int) {
        self.kind = kind
        inFeatures = features
        output = Matrix(rows: 0, cols: features)
        inputGrad = Matrix(rows: 0, cols: features)
        zeroBias = Matrix(rows: 1, cols: features)
    }

    public let parameters: [Parameter<T>] = []

    /// x: (N, D) -> y: (N, D), the same in training and evaluation.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forward(_ x: Matrix<T>, training: Bool) -> Matrix<T> {
        precondition(x.cols == inFeatures, "\(kind) expects \(inFeatures) features, got \(x.cols)")
        output.resize(rows: x.rows)
        let src = x.data, y = output.data, n = x.count
        switch kind {
        case .sigmoid:
            y.update(from: src, count: n)
            Elementwise.biasSigmoid(y, bias: zeroBias.data, rows: x.rows, cols: inFeatures)
        case .tanh:
            for i in 0..<n { y[i] = T.tanh(src[i]) }
        case .relu:
            for i in 0..<n { y[i] = src[i] > 0 ? src[i] : 0 }
        }
        return output
    }

    /// dx = dy * f'(x), with f' written in terms of the cached output y.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backward(_ dy: Matrix<T>) -> Matrix<T> {
        precondition(dy.rows == output.rows && dy.cols == inFeatures, "\(kind).backward: shape mismatch")
        inputGrad.resize(rows: dy.rows)
        let y = output.data, g = dy.data, dx = inputGrad.data, n = dy.count
        switch kind {
        case .sigmoid: for i in 0..<n { dx[i] = g[i] * y[i] * (1 - y[i]) }
        case .tanh: for i in 0..<n { dx[i] = g[i] * (1 - y[i] * y[i]) }
        case .relu:
            // Branch-free (the mask multiply vectorises): y > 0 exactly where x > 0.
            for i in 0..<n { dx[i] = g[i] * (y[i] > 0 ? 1 : 0) }
        }
        return inputGrad
    }
}
