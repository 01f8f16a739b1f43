import RealModule

/// Layer normalization (Ba, Kiros & Hinton 2016) over the features of each example, as
/// PyTorch's `nn.LayerNorm(D)` (eps inside the square root, biased variance, elementwise
/// affine). For x: (N, D), per example i:
///     mu_i = mean_j x_ij,  var_i = mean_j (x_ij - mu_i)^2,  istd_i = 1 / sqrt(var_i + eps),
///     xhat_ij = (x_ij - mu_i) istd_i,  y_ij = gamma_j xhat_ij + beta_j.
/// The same computation in training and evaluation (no running statistics).
public final class LayerNorm<T: BLASScalar>: Layer {
    public let features: Int
    public var inFeatures: Int { features }
    public var outFeatures: Int { features }
    public let eps: T
    public var computesInputGradient = true

    public let gamma: Parameter<T>  // (1, D), starts at 1; PyTorch's `weight`
    public let beta: Parameter<T>  // (1, D), starts at 0; PyTorch's `bias`
    public let parameters: [Parameter<T>]

    @usableFromInline let xhat: Matrix<T>  // (N, D), cached for backward
    @usableFromInline let istd: Matrix<T>  // (N, 1) as one value per example
    @usableFromInline let output: Matrix<T>
    @usableFromInline let inputGrad: Matrix<T>

    public init(features: Int, eps: T = 1e-5, name: String) {
        self.features = features
        self.eps = eps
        gamma = Parameter(name: "\(name).weight", value: Matrix(rows: 1, cols: features, values: Array(repeating: 1, count: features)), role: .gain)
        beta = Parameter(name: "\(name).bias", value: Matrix(rows: 1, cols: features), role: .shift)
        parameters = [gamma, beta]
        xhat = Matrix(rows: 0, cols: features)
        istd = Matrix(rows: 0, cols: 1)
        output = Matrix(rows: 0, cols: features)
        inputGrad = Matrix(rows: 0, cols: features)
    }

    /// x: (N, D) -> y: (N, D). Two passes per row (mean, then centred variance) for accuracy.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forward(_ x: Matrix<T>, training: Bool) -> Matrix<T> {
        precondition(x.cols == features, "LayerNorm expects \(features) features, got \(x.cols)")
        let n = x.rows, d = features
        output.resize(rows: n)
        xhat.resize(rows: n)
        istd.resize(rows: n)
        let invD = 1 / T(d)
        let g = gamma.value.data, b = beta.value.data
        for i in 0..<n {
            let xr = x.data + i * d, hr = xhat.data + i * d, yr = output.data + i * d
            var mu: T = 0
            for j in 0..<d { mu += xr[j] }
            mu *= invD
            var v: T = 0
            for j in 0..<d {
                let c = xr[j] - mu
                hr[j] = c
                v += c * c
            }
            let s = 1 / (v * invD + eps).squareRoot()
            istd.data[i] = s
            for j in 0..<d {
                let h = hr[j] * s
                hr[j] = h
                yr[j] = g[j] * h + b[j]
            }
        }
        return output
    }

    /// dbeta_j = sum_i dy_ij,  dgamma_j = sum_i dy_ij xhat_ij,  dxhat = dy gamma,
    /// dx_ij = (istd_i / D) (D dxhat_ij - sum_k dxhat_ik - xhat_ij sum_k dxhat_ik xhat_ik)
    /// (BatchNorm's closed form with the roles of the axes swapped).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backward(_ dy: Matrix<T>) -> Matrix<T> {
        precondition(dy.rows == xhat.rows && dy.cols == features, "LayerNorm.backward: shape mismatch")
        let n = dy.rows, d = features
        inputGrad.resize(rows: n)
        let g = gamma.value.data, dgamma = gamma.grad.data, dbeta = beta.grad.data
        dgamma.update(repeating: 0, count: d)
        dbeta.update(repeating: 0, count: d)
        let invD = 1 / T(d)
        for i in 0..<n {
            let gr = dy.data + i * d, hr = xhat.data + i * d, xr = inputGrad.data + i * d
            var sum: T = 0, dot: T = 0
            for j in 0..<d {
                let dh = gr[j] * g[j]
                sum += dh
                dot += dh * hr[j]
                dbeta[j] += gr[j]
                dgamma[j] += gr[j] * hr[j]
            }
            guard computesInputGradient else { continue }
            let s = istd.data[i]
            let ms = sum * invD, md = dot * invD
            for j in 0..<d { xr[j] = s * (gr[j] * g[j] - ms - hr[j] * md) }
        }
        return inputGrad
    }
}
