import RealModule

/// Batch normalization over the feature axis of (N, D) inputs (Ioffe & Szegedy 2015).
///
/// Training mode, per feature j:
///     mu_j = mean_i x_ij,  var_j = mean_i (x_ij - mu_j)^2   (biased),
///     istd_j = 1 / sqrt(var_j + eps),  xhat = (x - mu) istd,  y = gamma xhat + beta,
///     running = m * running + (1 - m) * batch    (m = `momentum`, the decay; PyTorch's
///     momentum=0.1 is m = 0.9 here).
/// Evaluation mode: y = gamma (x - running_mean) / sqrt(running_var + eps) + beta.
public final class BatchNorm1D<T: BLASScalar>: Layer {
    /// How the batch variance enters `running_var`.
    public enum RunningVariance: String, CaseIterable, Sendable {
        /// The biased batch variance, exactly as normalised with (the formulas above).
        case biased
        /// N/(N-1) times it, as PyTorch's BatchNorm1d does.
        case unbiased
    }

    public let features: Int
    /// The state_dict prefix of this layer's tensors (`2` for `2.weight`, `2.running_mean`, ...).
    public let name: String
    public var inFeatures: Int { features }
    public var outFeatures: Int { features }
    public var momentum: T
    public let eps: T
    public var runningVariance: RunningVariance
    public var computesInputGradient = true
    /// Uses the staged (graph-walking) backward instead of the closed form; for tests.
    public var useStagedBackward = false

    public let gamma: Parameter<T>  // (1, D), starts at 1
    public let beta: Parameter<T>  // (1, D), starts at 0
    public let runningMean: Buffer<T>  // (1, D), starts at 0
    public let runningVar: Buffer<T>  // (1, D), starts at 1
    /// Training steps taken (PyTorch's num_batches_tracked).
    public var batchesTracked = 0
    /// When true, a training forward leaves the running statistics alone: a data-parallel
    /// step applies them once the step's shards are done (docs/parallel.md).
    public var defersRunningStatistics = false
    /// The number of values behind `batchMean` and `batchVar` (the last training forward's).
    public var statisticsRows = 0
    /// Batch renormalization's limits (BatchRenorm.swift); nil is plain BN.
    public var renorm: RenormLimits<T>?
    /// Tests: when true, a renormalising forward reuses the last r and d (a fixed function).
    public var freezeRenorm = false
    /// `--bn-freeze-after`: a training forward normalises with the running statistics (as in
    /// evaluation; backward treats them as constants: dx = gamma dy / sqrt(running_var + eps))
    /// and leaves them alone.
    public var frozen = false
    /// Per feature, the last renormalising forward's r and d.
    public let renormR: Matrix<T>, renormD: Matrix<T>

    // Cached by the training-mode forward for backward: exactly what that forward used.
    @usableFromInline let centered: Matrix<T>  // x - mu: (N, D)
    @usableFromInline let xhat: Matrix<T>  // (N, D)
    @usableFromInline let batchMean: Matrix<T>  // (1, D)
    @usableFromInline let batchVar: Matrix<T>  // (1, D), biased
    @usableFromInline let istd: Matrix<T>  // (1, D)
    @usableFromInline var lastForwardWasTraining = false
    @usableFromInline let output: Matrix<T>
    @usableFromInline let inputGrad: Matrix<T>
    @usableFromInline let scratchA: Matrix<T>  // (1, D) per-feature sums in backward
    @usableFromInline let scratchB: Matrix<T>
    // Synchronised BN across shards: this shard's sums (read by every shard after a barrier),
    // and this shard's copies of the batch's sums (its own).
    public let shardSums: Matrix<T>  // (1, D) sum_i x_ij, then (backward) unused
    public let shardSquares: Matrix<T>  // (1, D) sum_i (x_ij - mu_j)^2
    public let batchSumsA: Matrix<T>, batchSumsB: Matrix<T>
    @usableFromInline var syncInput: Matrix<T>?

    public init(features: Int, momentum: T = 0.9, eps: T = 1e-5, runningVariance: RunningVariance = .biased, name: String = "bn") {
        self.features = features
        self.name = name
        self.momentum = momentum
        self.eps = eps
        self.runningVariance = runningVariance
        gamma = Parameter(name: "\(name).weight", value: Matrix(rows: 1, cols: features, values: Array(repeating: 1, count: features)), role: .gain)
        beta = Parameter(name: "\(name).bias", value: Matrix(rows: 1, cols: features), role: .shift)
        runningMean = Buffer(name: "\(name).running_mean", value: Matrix(rows: 1, cols: features))
        runningVar = Buffer(name: "\(name).running_var", value: Matrix(rows: 1, cols: features, values: Array(repeating: 1, count: features)))
        parameters = [gamma, beta]
        buffers = [runningMean, runningVar]
        centered = Matrix(rows: 0, cols: features)
        xhat = Matrix(rows: 0, cols: features)
        batchMean = Matrix(rows: 1, cols: features)
        batchVar = Matrix(rows: 1, cols: features)
        istd = Matrix(rows: 1, cols: features)
        output = Matrix(rows: 0, cols: features)
        inputGrad = Matrix(rows: 0, cols: features)
        scratchA = Matrix(rows: 1, cols: features)
        scratchB = Matrix(rows: 1, cols: features)
        shardSums = Matrix(rows: 1, cols: features)
        shardSquares = Matrix(rows: 1, cols: features)
        batchSumsA = Matrix(rows: 1, cols: features)
        batchSumsB = Matrix(rows: 1, cols: features)
        renormR = Matrix(rows: 1, cols: features, values: Array(repeating: 1, count: features))
        renormD = Matrix(rows: 1, cols: features)
    }

    /// Built once: a computed array would allocate on every call in the training loop.
    public let parameters: [Parameter<T>]
    public let buffers: [Buffer<T>]

    /// x: (N, D) -> y: (N, D)
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forward(_ x: Matrix<T>, training: Bool) -> Matrix<T> {
        precondition(x.cols == features, "BatchNorm1D expects \(features) features, got \(x.cols)")
        let n = x.rows, d = features
        output.resize(rows: n)
        let src = x.data, y = output.data, g = gamma.value.data, b = beta.value.data
        lastForwardWasTraining = training
        guard training else {
            // Fold the running statistics into one scale and shift per feature.
            let scale = scratchA.data, shift = scratchB.data
            let rm = runningMean.value.data, rv = runningVar.value.data
            for j in 0..<d {
                scale[j] = g[j] / (rv[j] + eps).squareRoot()
                shift[j] = b[j] - rm[j] * scale[j]
            }
            for i in 0..<n {
                let xr = src + i * d, yr = y + i * d
                for j in 0..<d { yr[j] = xr[j] * scale[j] + shift[j] }
            }
            return output
        }
        precondition(n > 0, "BatchNorm1D needs at least one example in training mode")
        if frozen {
            xhat.resize(rows: n)
            let s = istd.data, h = xhat.data, rm = runningMean.value.data, rv = runningVar.value.data
            for j in 0..<d { s[j] = 1 / (rv[j] + eps).squareRoot() }
            for i in 0..<n {
                let xr = src + i * d, hr = h + i * d, yr = y + i * d
                for j in 0..<d {
                    let t = (xr[j] - rm[j]) * s[j]
                    hr[j] = t
                    yr[j] = g[j] * t + b[j]
                }
            }
            statisticsRows = n
            return output
        }
        // The synchronised phases with the batch as the only shard: per-feature sums, then the
        // centred values and the biased variance (two passes, for accuracy), then normalise.
        syncForwardSums(x)
        syncForwardDeviations(batchSums: shardSums.data, batchRows: n)
        _ = syncForwardNormalize(batchSquares: shardSquares.data)
        if !defersRunningStatistics { updateRunningStatistics(mean: batchMean.data, variance: batchVar.data, count: n) }
        return output
    }

    /// running = m running + (1 - m) batch, with the biased `variance` of `count` values
    /// (times count/(count-1) when `runningVariance` is unbiased); one tracked batch.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func updateRunningStatistics(mean mu: UnsafePointer<T>, variance v: UnsafePointer<T>, count n: Int) {
        let rm = runningMean.value.data, rv = runningVar.value.data
        let m = momentum, bessel: T = (runningVariance == .unbiased && n > 1) ? T(n) / T(n - 1) : 1
        for j in 0..<features {
            rm[j] = m * rm[j] + (1 - m) * mu[j]
            rv[j] = m * rv[j] + (1 - m) * v[j] * bessel
        }
        // Saturates: a checkpoint may hold any int64 (PyTorch loads and counts on from it).
        batchesTracked = batchesTracked == .max ? .max : batchesTracked + 1
    }

    @_specialize(where T == Float)

    @_specialize(where T == Double)

    @inlinable
    public func backward(_ dy: Matrix<T>) -> Matrix<T> {
        precondition(lastForwardWasTraining, "BatchNorm1D.backward needs a training-mode forward")
        precondition(dy.rows == xhat.rows && dy.cols == features, "BatchNorm1D.backward: shape mismatch")
        return useStagedBackward ? backwardStaged(dy) : backwardSimplified(dy)
    }

    /// The closed form:
    ///     dbeta_j = sum_i dy_ij,  dgamma_j = sum_i dy_ij xhat_ij,  dxhat = dy gamma,
    ///     dx_ij = (istd_j / N) (N dxhat_ij - sum_k dxhat_kj - xhat_ij sum_k dxhat_kj xhat_kj).
    /// With dxhat = gamma dy, the two sums are gamma_j dbeta_j and gamma_j dgamma_j.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backwardSimplified(_ dy: Matrix<T>) -> Matrix<T> {
        // The synchronised phases with the batch as the only shard.
        syncBackwardSums(dy)
        return syncBackwardInput(dy, batchSumDy: beta.grad.data, batchSumDyXhat: gamma.grad.data)
    }

    /// The staged backward: walks the forward graph node by node and sums the branches.
    ///     xmu = x - mu, sq = xmu^2, var = mean(sq), sqrtvar = sqrt(var + eps),
    ///     ivar = 1/sqrtvar, xhat = xmu ivar, y = gamma xhat + beta.
    /// Slower (more passes and allocations); kept as an independent check of the closed form.
    public func backwardStaged(_ dy: Matrix<T>) -> Matrix<T> {
        let n = dy.rows, d = features
        inputGrad.resize(rows: n)
        let nT = T(n)
        var dbeta = [T](repeating: 0, count: d), dgamma = [T](repeating: 0, count: d)
        var divar = [T](repeating: 0, count: d)
        var dxhat = [T](repeating: 0, count: n * d)
        for i in 0..<n {
            for j in 0..<d {
                let gij = dy.data[i * d + j]
                dbeta[j] += gij
                dgamma[j] += gij * xhat.data[i * d + j]
                dxhat[i * d + j] = gij * gamma.value.data[j]
            }
        }
        // xhat = xmu * ivar: branch into xmu (dxmu1) and into ivar (divar, summed over the batch).
        var dxmu1 = [T](repeating: 0, count: n * d)
        for i in 0..<n {
            for j in 0..<d {
                divar[j] += dxhat[i * d + j] * centered.data[i * d + j]
                dxmu1[i * d + j] = dxhat[i * d + j] * istd.data[j]
            }
        }
        var dx1 = [T](repeating: 0, count: n * d)
        var dmu = [T](repeating: 0, count: d)
        for j in 0..<d {
            let varPlusEps = batchVar.data[j] + eps
            let sqrtvar = varPlusEps.squareRoot()
            let dsqrtvar = -1 / (sqrtvar * sqrtvar) * divar[j]  // ivar = 1/sqrtvar
            let dvar = 0.5 / sqrtvar * dsqrtvar  // sqrtvar = sqrt(var + eps)
            let dsq = dvar / nT  // var = mean(sq)
            for i in 0..<n {
                // sq = xmu^2 -> 2 xmu dsq; plus the direct branch dxmu1.
                let v = dxmu1[i * d + j] + 2 * centered.data[i * d + j] * dsq
                dx1[i * d + j] = v
                dmu[j] -= v  // xmu = x - mu
            }
        }
        for i in 0..<n {
            for j in 0..<d {
                inputGrad.data[i * d + j] = dx1[i * d + j] + dmu[j] / nT  // mu = mean(x)
            }
        }
        for j in 0..<d {
            beta.grad.data[j] = dbeta[j]
            gamma.grad.data[j] = dgamma[j]
        }
        return inputGrad
    }
}

// MARK: - Synchronised across shards (docs/parallel.md)

extension BatchNorm1D: ShardSynchronizedNormalization {
    public var channels: Int { features }
    public var batchMeanValues: UnsafePointer<T> { UnsafePointer(batchMean.data) }
    public var batchVarianceValues: UnsafePointer<T> { UnsafePointer(batchVar.data) }

    /// Phase 1: shardSums_j = sum_i x_ij over this shard (rows in order, as the forward).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func syncForwardSums(_ x: Matrix<T>) {
        precondition(x.cols == features && x.rows > 0, "BatchNorm1D expects \(features) features")
        syncInput = x
        lastForwardWasTraining = true
        let n = x.rows, d = features, s = shardSums.data, src = x.data
        s.update(repeating: 0, count: d)
        for i in 0..<n {
            let xr = src + i * d
            for j in 0..<d { s[j] += xr[j] }
        }
    }

    /// Phase 2: mu = sums / B, the batch's mean; this shard's centred values and
    /// shardSquares_j = sum_i (x_ij - mu_j)^2.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func syncForwardDeviations(batchSums: UnsafePointer<T>, batchRows count: Int) {
        let x = syncInput!, n = x.rows, d = features
        centered.resize(rows: n)
        let mu = batchMean.data, q = shardSquares.data, c = centered.data, src = x.data
        let invN = 1 / T(count)
        for j in 0..<d { mu[j] = batchSums[j] * invN }
        q.update(repeating: 0, count: d)
        for i in 0..<n {
            let xr = src + i * d, cr = c + i * d
            for j in 0..<d {
                let t = xr[j] - mu[j]
                cr[j] = t
                q[j] += t * t
            }
        }
        statisticsRows = count
    }

    /// Phase 3: var = squares / count (biased), then normalise, scale and shift this shard.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func syncForwardNormalize(batchSquares: UnsafePointer<T>) -> Matrix<T> {
        let n = centered.rows, d = features
        output.resize(rows: n)
        xhat.resize(rows: n)
        let v = batchVar.data, s = istd.data, c = centered.data, h = xhat.data, y = output.data
        let g = gamma.value.data, b = beta.value.data
        let invN = 1 / T(statisticsRows)
        for j in 0..<d {
            v[j] = batchSquares[j] * invN
            s[j] = 1 / (v[j] + eps).squareRoot()
        }
        if let limits = renorm, !frozen {
            let r = renormR.data, dd = renormD.data, mu = batchMean.data, rm = runningMean.value.data, rv = runningVar.value.data
            if !freezeRenorm { for j in 0..<d { (r[j], dd[j]) = limits.correction(mean: mu[j], variance: v[j], runningMean: rm[j], runningVariance: rv[j], eps: eps) } }
            for i in 0..<n {
                let cr = c + i * d, hr = h + i * d, yr = y + i * d
                for j in 0..<d {
                    let t = cr[j] * s[j] * r[j] + dd[j]
                    hr[j] = t
                    yr[j] = g[j] * t + b[j]
                }
            }
            syncInput = nil
            return output
        }
        for i in 0..<n {
            let cr = c + i * d, hr = h + i * d, yr = y + i * d
            for j in 0..<d {
                let t = cr[j] * s[j]
                hr[j] = t
                yr[j] = g[j] * t + b[j]
            }
        }
        syncInput = nil
        return output
    }

    /// Backward phase 1: this shard's beta.grad = sum_i dy_ij and gamma.grad = sum_i dy_ij xhat_ij.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func syncBackwardSums(_ dy: Matrix<T>) {
        precondition(dy.rows == xhat.rows && dy.cols == features, "BatchNorm1D.backward: shape mismatch")
        let n = dy.rows, d = features, g = dy.data, h = xhat.data
        let dbeta = beta.grad.data, dgamma = gamma.grad.data
        dbeta.update(repeating: 0, count: d)
        dgamma.update(repeating: 0, count: d)
        for i in 0..<n {
            let gr = g + i * d, hr = h + i * d
            for j in 0..<d {
                dbeta[j] += gr[j]
                dgamma[j] += gr[j] * hr[j]
            }
        }
    }

    /// Backward phase 2: dx from the batch's two sums, as `backwardSimplified` with N the batch.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func syncBackwardInput(_ dy: Matrix<T>, batchSumDy dbeta: UnsafePointer<T>, batchSumDyXhat dgamma: UnsafePointer<T>) -> Matrix<T> {
        let n = dy.rows, d = features
        inputGrad.resize(rows: n)
        guard computesInputGradient else { return inputGrad }
        let gy = dy.data, h = xhat.data, s = istd.data, gam = gamma.value.data, dx = inputGrad.data
        let k = scratchA.data, mb = scratchB.data
        let invN = 1 / T(statisticsRows)
        if frozen {
            for j in 0..<d { k[j] = gam[j] * s[j] }
            for i in 0..<n {
                let gr = gy + i * d, xr = dx + i * d
                for j in 0..<d { xr[j] = k[j] * gr[j] }
            }
            return inputGrad
        }
        if renorm != nil {
            // xhat = r z + d: z = (xhat - d) / r and sum(dy z) = (dgamma - d dbeta) / r.
            let r = renormR.data, dd = renormD.data
            for j in 0..<d {
                k[j] = gam[j] * s[j] * r[j]
                mb[j] = dbeta[j] * invN
            }
            for i in 0..<n {
                let gr = gy + i * d, hr = h + i * d, xr = dx + i * d
                for j in 0..<d {
                    let q = (dgamma[j] - dd[j] * dbeta[j]) * invN / (r[j] * r[j])
                    xr[j] = k[j] * (gr[j] - mb[j] - (hr[j] - dd[j]) * q)
                }
            }
            return inputGrad
        }
        for j in 0..<d {
            k[j] = gam[j] * s[j]
            mb[j] = dbeta[j] * invN
        }
        for i in 0..<n {
            let gr = gy + i * d, hr = h + i * d, xr = dx + i * d
            for j in 0..<d {
                xr[j] = k[j] * (gr[j] - mb[j] - hr[j] * dgamma[j] * invN)
            }
        }
        return inputGrad
    }
}
