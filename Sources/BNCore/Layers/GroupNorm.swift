import CKernels
import RealModule

/// Group normalization (Wu & He 2018) as PyTorch's `nn.GroupNorm(G, C)`: the C channels of an
/// image (or the C features of a vector, H = W = 1) fall into G groups of C/G consecutive
/// channels, and each example's group is normalised by its own statistics over its
/// M = (C/G) H W values (biased variance, eps inside the square root), then scaled and
/// shifted per channel. For example i, group g, value j of the group:
///     mu = mean_j x_j,  istd = 1 / sqrt(mean_j (x_j - mu)^2 + eps),
///     xhat_j = (x_j - mu) istd,  y_j = gamma_c(j) xhat_j + beta_c(j).
/// The same in training and evaluation (no running statistics), so it does not depend on the
/// batch. In bntrain's (N, C H W) layout a group is one contiguous run of M values per row.
public class GroupNorm<T: BLASScalar>: Layer {
    public let channels: Int, groups: Int
    /// H W: values per channel (1 for a feature vector).
    public let plane: Int
    public var inFeatures: Int { channels * plane }
    public var outFeatures: Int { channels * plane }
    public let eps: T
    public var computesInputGradient = true

    public let gamma: Parameter<T>  // (1, C), starts at 1; PyTorch's `weight`
    public let beta: Parameter<T>  // (1, C), starts at 0; PyTorch's `bias`
    public let parameters: [Parameter<T>]

    @usableFromInline let xhat: Matrix<T>  // (N, C H W), cached for backward
    @usableFromInline let istd: Matrix<T>  // (N, G)
    @usableFromInline let output: Matrix<T>
    @usableFromInline let inputGrad: Matrix<T>

    public init(channels: Int, groups: Int, plane: Int = 1, eps: T = 1e-5, name: String) {
        precondition(groups >= 1 && channels % groups == 0, "GroupNorm needs channels divisible by groups")
        (self.channels, self.groups, self.plane, self.eps) = (channels, groups, plane, eps)
        gamma = Parameter(name: "\(name).weight", value: Matrix(rows: 1, cols: channels, values: Array(repeating: 1, count: channels)), role: .gain)
        beta = Parameter(name: "\(name).bias", value: Matrix(rows: 1, cols: channels), role: .shift)
        parameters = [gamma, beta]
        xhat = Matrix(rows: 0, cols: channels * plane)
        istd = Matrix(rows: 0, cols: groups)
        output = Matrix(rows: 0, cols: channels * plane)
        inputGrad = Matrix(rows: 0, cols: channels * plane)
    }

    /// x: (N, C H W) -> y: (N, C H W). Two passes per group (mean, then centred variance).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forward(_ x: Matrix<T>, training: Bool) -> Matrix<T> {
        precondition(x.cols == inFeatures, "GroupNorm expects \(inFeatures) features, got \(x.cols)")
        let n = x.rows, perGroup = channels / groups, m = perGroup * plane
        output.resize(rows: n)
        xhat.resize(rows: n)
        istd.resize(rows: n)
        let invM = 1 / T(m)
        let g = gamma.value.data, b = beta.value.data
        if T.self == Float.self {
            // The C kernel per group (16-lane sums, GroupNorm section of CKernels.h).
            for i in 0..<n {
                for grp in 0..<groups {
                    let start = i * inFeatures + grp * m, c0 = grp * perGroup
                    let s = bn_group_norm_forward_f32(float32(x.data + start), float32Buffer(xhat.data + start), float32Buffer(output.data + start),
                                                      perGroup, plane, float32(g + c0), float32(b + c0), Float(eps))
                    istd.data[i * groups + grp] = T(s)
                }
            }
            return output
        }
        for i in 0..<n {
            for grp in 0..<groups {
                let start = i * inFeatures + grp * m
                let xr = x.data + start, hr = xhat.data + start, yr = output.data + start
                var mu: T = 0
                for j in 0..<m { mu += xr[j] }
                mu *= invM
                var v: T = 0
                for j in 0..<m {
                    let c = xr[j] - mu
                    hr[j] = c
                    v += c * c
                }
                let s = 1 / (v * invM + eps).squareRoot()
                istd.data[i * groups + grp] = s
                for j in 0..<m {
                    let c = grp * perGroup + j / plane
                    let h = hr[j] * s
                    hr[j] = h
                    yr[j] = g[c] * h + b[c]
                }
            }
        }
        return output
    }

    /// dbeta_c = sum dy over examples and the channel's plane, dgamma_c = sum dy xhat, and per
    /// example and group, with dxhat = dy gamma:
    ///     dx_j = (istd / M) (M dxhat_j - sum_k dxhat_k - xhat_j sum_k dxhat_k xhat_k).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backward(_ dy: Matrix<T>) -> Matrix<T> {
        precondition(dy.rows == xhat.rows && dy.cols == inFeatures, "GroupNorm.backward: shape mismatch")
        let n = dy.rows, perGroup = channels / groups, m = perGroup * plane
        inputGrad.resize(rows: n)
        let g = gamma.value.data, dgamma = gamma.grad.data, dbeta = beta.grad.data
        dgamma.update(repeating: 0, count: channels)
        dbeta.update(repeating: 0, count: channels)
        let invM = 1 / T(m)
        if T.self == Float.self {
            for i in 0..<n {
                for grp in 0..<groups {
                    let start = i * inFeatures + grp * m, c0 = grp * perGroup
                    bn_group_norm_backward_f32(float32(dy.data + start), float32(xhat.data + start), computesInputGradient ? float32Buffer(inputGrad.data + start) : nil,
                                               perGroup, plane, float32(g + c0), float32Buffer(dgamma + c0), float32Buffer(dbeta + c0), Float(istd.data[i * groups + grp]))
                }
            }
            return inputGrad
        }
        for i in 0..<n {
            for grp in 0..<groups {
                let start = i * inFeatures + grp * m
                let gr = dy.data + start, hr = xhat.data + start, xr = inputGrad.data + start
                var sum: T = 0, dot: T = 0
                for j in 0..<m {
                    let c = grp * perGroup + j / plane
                    let dh = gr[j] * g[c]
                    sum += dh
                    dot += dh * hr[j]
                    dbeta[c] += gr[j]
                    dgamma[c] += gr[j] * hr[j]
                }
                guard computesInputGradient else { continue }
                let s = istd.data[i * groups + grp]
                let ms = sum * invM, md = dot * invM
                for j in 0..<m { xr[j] = s * (gr[j] * g[grp * perGroup + j / plane] - ms - hr[j] * md) }
            }
        }
        return inputGrad
    }
}
