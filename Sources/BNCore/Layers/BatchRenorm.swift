/// Batch renormalization (Ioffe 2017, "Batch Renormalization", Algorithm 1), a mode of
/// BatchNorm1D and BatchNorm2D. In training, per channel, with the running statistics
/// before this step (sigma = sqrt(running_var + eps)):
///     r = clip(sigma_B / sigma, 1/r_max, r_max),  d = clip((mu_B - running_mean) / sigma, -d_max, d_max),
///     xhat = (x - mu_B) / sigma_B * r + d,  y = gamma xhat + beta,
/// with r and d constants in the backward pass (the paper's stop_gradient):
///     dgamma = sum dy xhat,  dbeta = sum dy,
///     dx = (gamma r / sigma_B) (dy - mean dy - z mean(dy z)),  z = (x - mu_B) / sigma_B,
/// where sum(dy z) = (dgamma - d dbeta) / r. r_max = 1, d_max = 0 is plain BN's forward and
/// backward. Evaluation normalises with the running statistics, as BN does.
///
/// The running statistics are BN's (the EMA of the batch mean and variance), so checkpoints,
/// evaluation and PyTorch export are unchanged; the paper averages sigma itself instead
/// (docs/normalization.md).
public struct RenormLimits<T: BLASScalar>: Equatable {
    public var rmax: T
    public var dmax: T
    public init(rmax: T, dmax: T) {
        self.rmax = rmax
        self.dmax = dmax
    }

    /// r and d of one channel from the batch's mean and biased variance and the running ones.
    @inlinable
    public func correction(mean mu: T, variance v: T, runningMean rm: T, runningVariance rv: T, eps: T) -> (r: T, d: T) {
        let sigmaB = (v + eps).squareRoot(), sigma = (rv + eps).squareRoot()
        let r = min(max(sigmaB / sigma, 1 / rmax), rmax)
        let d = min(max((mu - rm) / sigma, -dmax), dmax)
        return (r, d)
    }
}
