/// Layer normalization (Ba, Kiros & Hinton 2016) over the features of each example, as
/// PyTorch's `nn.LayerNorm(D)` (eps inside the square root, biased variance, elementwise
/// affine). For x: (N, D), per example i:
///     mu_i = mean_j x_ij,  var_i = mean_j (x_ij - mu_i)^2,  istd_i = 1 / sqrt(var_i + eps),
///     xhat_ij = (x_ij - mu_i) istd_i,  y_ij = gamma_j xhat_ij + beta_j.
/// That is GroupNorm with one group over D one-value channels, and it runs as one: the same
/// arithmetic in the same order. The same in training and evaluation (no running statistics).
public final class LayerNorm<T: BLASScalar>: GroupNorm<T> {
    public var features: Int { channels }

    public init(features: Int, eps: T = 1e-5, name: String) {
        super.init(channels: features, groups: 1, plane: 1, eps: eps, name: name)
    }
}
