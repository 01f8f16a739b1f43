import CKernels

/// Batch normalization over the channels of image batches (PyTorch's `nn.BatchNorm2d`): the
/// statistics of channel c are taken over N, H and W (M = N H W values); otherwise exactly
/// BatchNorm1D's math and conventions (biased variance to normalise, running averages with
/// decay m, running_var biased or unbiased M/(M-1)):
///     xhat = (x - mu_c) / sqrt(var_c + eps),  y = gamma_c xhat + beta_c
///     dx = (gamma_c istd_c / M) (M dy - sum dy - xhat sum(dy xhat))   (sums over N, H, W)
/// x: (N, C, H, W) -> y: same shape.
///
/// With `fusedReLU` the layer also applies the ReLU that follows it in the spec (`bn-relu`):
/// y = max(gamma xhat + beta, 0), and backward first masks dy where y = 0. The arithmetic is
/// the unfused pair's, element for element and in the same summation order, so fusing changes
/// no result (tested); it saves the ReLU's pass over the activations in both directions.
///
/// Memory: xhat is not stored. Backward recomputes it from the input, which the layer keeps a
/// reference to (the previous layer's output is not touched until the next forward), with
/// the same expression as the forward, so the values are identical and the layer writes one
/// activation-sized buffer per forward instead of two.
public final class BatchNorm2D<T: BLASScalar>: Layer {
    public let shape: ImageShape
    public let name: String
    public let fusedReLU: Bool
    public var inFeatures: Int { shape.count }
    public var outFeatures: Int { shape.count }
    public var momentum: T
    public let eps: T
    public var runningVariance: BatchNorm1D<T>.RunningVariance
    public var computesInputGradient = true
    public let gamma: Parameter<T>, beta: Parameter<T>  // (1, C)
    public let runningMean: Buffer<T>, runningVar: Buffer<T>  // (1, C)
    public var batchesTracked = 0
    /// When true, a training forward leaves the running statistics alone: a data-parallel
    /// step applies them once the step's shards are done (docs/parallel.md).
    public var defersRunningStatistics = false
    /// The number of values (N H W) behind `mean` and `variance` (the last training forward's).
    public var statisticsRows = 0
    /// Batch renormalization's limits (BatchRenorm.swift); nil is plain BN.
    public var renorm: RenormLimits<T>?
    /// Tests: when true, a renormalising forward reuses the last r and d (a fixed function).
    public var freezeRenorm = false
    /// `--bn-freeze-after`: a training forward normalises with the running statistics (as in
    /// evaluation; constants in backward) and leaves them alone.
    public var frozen = false
    /// Per channel, the last renormalising forward's r and d.
    public let renormR: Matrix<T>, renormD: Matrix<T>
    public let parameters: [Parameter<T>]
    public let buffers: [Buffer<T>]

    @usableFromInline let out: Matrix<T>, inputGrad: Matrix<T>
    @usableFromInline let mean: Matrix<T>, istd: Matrix<T>, variance: Matrix<T>  // (1, C), variance biased
    // Synchronised BN across shards: this shard's sums (read by every shard after a barrier).
    public let shardSums: Matrix<T>, shardSquares: Matrix<T>  // (1, C)
    public let batchSumsA: Matrix<T>, batchSumsB: Matrix<T>  // this shard's copies of the batch's sums
    @usableFromInline var input: Matrix<T>?  // the last training forward's x (not copied)
    @usableFromInline var lastForwardWasTraining = false

    public init(shape: ImageShape, momentum: T = 0.9, eps: T = 1e-5, runningVariance: BatchNorm1D<T>.RunningVariance = .biased, fusedReLU: Bool = false, name: String) {
        self.shape = shape
        self.name = name
        self.fusedReLU = fusedReLU
        self.momentum = momentum
        self.eps = eps
        self.runningVariance = runningVariance
        let c = shape.c
        gamma = Parameter(name: "\(name).weight", value: Matrix(rows: 1, cols: c, values: Array(repeating: 1, count: c)), role: .gain)
        beta = Parameter(name: "\(name).bias", value: Matrix(rows: 1, cols: c), role: .shift)
        runningMean = Buffer(name: "\(name).running_mean", value: Matrix(rows: 1, cols: c))
        runningVar = Buffer(name: "\(name).running_var", value: Matrix(rows: 1, cols: c, values: Array(repeating: 1, count: c)))
        parameters = [gamma, beta]
        buffers = [runningMean, runningVar]
        out = Matrix(rows: 0, cols: shape.count)
        inputGrad = Matrix(rows: 0, cols: shape.count)
        mean = Matrix(rows: 1, cols: c)
        istd = Matrix(rows: 1, cols: c)
        variance = Matrix(rows: 1, cols: c)
        shardSums = Matrix(rows: 1, cols: c)
        shardSquares = Matrix(rows: 1, cols: c)
        batchSumsA = Matrix(rows: 1, cols: c)
        batchSumsB = Matrix(rows: 1, cols: c)
        renormR = Matrix(rows: 1, cols: c, values: Array(repeating: 1, count: c))
        renormD = Matrix(rows: 1, cols: c)
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forward(_ x: Matrix<T>, training: Bool) -> Matrix<T> {
        precondition(x.cols == shape.count, "BatchNorm2D expects \(shape) per example")
        let n = x.rows, C = shape.c, hw = shape.h * shape.w
        out.resize(rows: n)
        lastForwardWasTraining = training
        let g = gamma.value.data, b = beta.value.data
        if !training {
            input = nil
            let rm = runningMean.value.data, rv = runningVar.value.data
            for c in 0..<C {
                let scale = g[c] / (rv[c] + eps).squareRoot(), shift = b[c] - rm[c] * scale
                for e in 0..<n {
                    let o = (e * C + c) * hw
                    Self.affine(x.data + o, out.data + o, hw, scale: scale, shift: shift, relu: fusedReLU)
                }
            }
            return out
        }
        precondition(n > 0, "BatchNorm2D needs values to normalise")
        if frozen {
            input = x
            statisticsRows = n * hw
            let rm = runningMean.value.data, rv = runningVar.value.data, stride = C * hw
            for c in 0..<C {
                mean.data[c] = rm[c]
                istd.data[c] = 1 / (rv[c] + eps).squareRoot()
                Self.planesNormalize(x.data + c * hw, out.data + c * hw, n, stride, hw, mean: rm[c], istd: istd.data[c], gamma: g[c], beta: b[c], relu: fusedReLU)
            }
            return out
        }
        // The synchronised phases with the batch as the only shard: per-channel sums, then the
        // sums of squared deviations (two passes, for accuracy), then normalise; each a 16-lane
        // reduction per plane (see the plane kernels below).
        syncForwardSums(x)
        syncForwardDeviations(batchSums: shardSums.data, batchRows: n)
        _ = syncForwardNormalize(batchSquares: shardSquares.data)
        if !defersRunningStatistics { updateRunningStatistics(mean: mean.data, variance: variance.data, count: n * hw) }
        return out
    }

    /// running = m running + (1 - m) batch, with the biased `variance` of `count` values
    /// (times count/(count-1) when `runningVariance` is unbiased); one tracked batch.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func updateRunningStatistics(mean mu: UnsafePointer<T>, variance v: UnsafePointer<T>, count: Int) {
        let m = T(count)
        let bessel: T = (runningVariance == .unbiased && count > 1) ? m / (m - 1) : 1
        let rm = runningMean.value.data, rv = runningVar.value.data
        for c in 0..<shape.c {
            rm[c] = momentum * rm[c] + (1 - momentum) * mu[c]
            rv[c] = momentum * rv[c] + (1 - momentum) * v[c] * bessel
        }
        // Saturates: a checkpoint may hold any int64 (PyTorch loads and counts on from it).
        batchesTracked = batchesTracked == .max ? .max : batchesTracked + 1
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backward(_ dy: Matrix<T>) -> Matrix<T> {
        precondition(lastForwardWasTraining, "BatchNorm2D.backward needs a training forward of the same shape")
        // The synchronised phases with the batch as the only shard.
        syncBackwardSums(dy)
        return syncBackwardInput(dy, batchSumDy: beta.grad.data, batchSumDyXhat: gamma.grad.data)
    }

    // Plane kernels over one channel: `planes` planes of `hw` values, plane e at p + e stride
    // (NCHW: stride = C H W). Float runs CKernels' bn_planes_* (AVX-512 where there is): sums
    // in 16 lanes with the lane layout of Elementwise.sum/dot, plane sums added in plane order.
    // Double, used by the checks, runs the plain loops here. xhat = (x - mu) istd is computed
    // by the same expression everywhere.

    /// sum over the planes of x.
    @inlinable
    static func planesSum(_ x: UnsafePointer<T>, _ planes: Int, _ stride: Int, _ hw: Int) -> T {
        if T.self == Float.self { return T(Float(bn_planes_sum_f32(float32(x), planes, stride, hw))) }
        var s: T = 0
        for e in 0..<planes { s += Elementwise.sum(x + e * stride, hw) }
        return s
    }

    /// sum over the planes of (x - mu)^2.
    @inlinable
    static func planesSquaredDeviation(_ x: UnsafePointer<T>, _ planes: Int, _ stride: Int, _ hw: Int, mean mu: T) -> T {
        if T.self == Float.self { return T(Float(bn_planes_squared_deviation_f32(float32(x), planes, stride, hw, float32(mu)))) }
        var s: T = 0
        for e in 0..<planes { s += Elementwise.squaredDeviation(x + e * stride, hw, from: mu) }
        return s
    }

    /// y = gamma xhat + beta, then max(y, 0) if relu (NaN -> 0, as the ReLU layer).
    @inlinable
    static func planesNormalize(_ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ planes: Int, _ stride: Int, _ hw: Int, mean mu: T, istd inv: T, gamma g: T, beta b: T, relu: Bool) {
        if T.self == Float.self {
            return bn_planes_normalize_f32(float32(x), float32Buffer(y), planes, stride, hw, float32(mu), float32(inv), float32(g), float32(b), relu ? 1 : 0)
        }
        for e in 0..<planes {
            for i in (e * stride)..<(e * stride + hw) {
                let v = g * ((x[i] - mu) * inv) + b
                y[i] = relu ? (v > 0 ? v : 0) : v
            }
        }
    }

    /// Evaluation: y = x scale + shift, then the ReLU if fused.
    @inlinable
    static func affine(_ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ n: Int, scale: T, shift: T, relu: Bool) {
        for i in 0..<n {
            let v = x[i] * scale + shift
            y[i] = relu ? (v > 0 ? v : 0) : v
        }
    }

    /// (sum g', sum g' xhat) over the planes, with g' = dy, or dy where y > 0 and 0 elsewhere
    /// when y is given.
    @inlinable
    static func planesGradientSums(_ dy: UnsafePointer<T>, _ x: UnsafePointer<T>, _ y: UnsafePointer<T>?, _ planes: Int, _ stride: Int, _ hw: Int, mean mu: T, istd inv: T) -> (T, T) {
        if T.self == Float.self {
            var (s1, s2): (Float, Float) = (0, 0)
            bn_planes_gradient_sums_f32(float32(dy), float32(x), y.map { float32($0) }, planes, stride, hw, float32(mu), float32(inv), &s1, &s2)
            return (T(s1), T(s2))
        }
        var s1: T = 0, s2: T = 0
        for e in 0..<planes {
            var p1: T = 0, p2: T = 0
            for i in (e * stride)..<(e * stride + hw) {
                let g: T = (y.map { $0[i] > 0 } ?? true) ? dy[i] : 0
                p1 += g
                p2 += g * ((x[i] - mu) * inv)
            }
            s1 += p1
            s2 += p2
        }
        return (s1, s2)
    }

    /// dx = k (g' - a - xhat bq), k = gamma istd, a = sum g' / M, bq = sum(g' xhat) / M.
    @inlinable
    static func planesInputGradient(_ dy: UnsafePointer<T>, _ x: UnsafePointer<T>, _ y: UnsafePointer<T>?, _ dx: UnsafeMutablePointer<T>, _ planes: Int, _ stride: Int, _ hw: Int, mean mu: T, istd inv: T, k: T, a: T, bq: T) {
        if T.self == Float.self {
            return bn_planes_input_gradient_f32(float32(dy), float32(x), y.map { float32($0) }, float32Buffer(dx), planes, stride, hw, float32(mu), float32(inv), float32(k), float32(a), float32(bq))
        }
        for e in 0..<planes {
            for i in (e * stride)..<(e * stride + hw) {
                let g: T = (y.map { $0[i] > 0 } ?? true) ? dy[i] : 0
                dx[i] = k * (g - a - ((x[i] - mu) * inv) * bq)
            }
        }
    }
}

// MARK: - Synchronised across shards (docs/parallel.md)

extension BatchNorm2D: ShardSynchronizedNormalization {
    public var channels: Int { shape.c }
    public var batchMeanValues: UnsafePointer<T> { UnsafePointer(mean.data) }
    public var batchVarianceValues: UnsafePointer<T> { UnsafePointer(variance.data) }

    /// Phase 1: shardSums_c = sum of x over this shard's planes of channel c.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func syncForwardSums(_ x: Matrix<T>) {
        precondition(x.cols == shape.count && x.rows > 0, "BatchNorm2D expects \(shape) per example")
        input = x
        lastForwardWasTraining = true
        let hw = shape.h * shape.w, stride = shape.c * hw
        for c in 0..<shape.c { shardSums.data[c] = Self.planesSum(x.data + c * hw, x.rows, stride, hw) }
    }

    /// Phase 2: mu_c = sums_c / M (M = B H W), and this shard's sum of (x - mu_c)^2.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func syncForwardDeviations(batchSums: UnsafePointer<T>, batchRows: Int) {
        let x = input!, hw = shape.h * shape.w, stride = shape.c * hw
        statisticsRows = batchRows * hw
        let m = T(statisticsRows)
        for c in 0..<shape.c {
            let mu = batchSums[c] / m
            mean.data[c] = mu
            shardSquares.data[c] = Self.planesSquaredDeviation(x.data + c * hw, x.rows, stride, hw, mean: mu)
        }
    }

    /// Phase 3: var_c = squares_c / M (biased), then normalise this shard.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func syncForwardNormalize(batchSquares: UnsafePointer<T>) -> Matrix<T> {
        let x = input!, n = x.rows, hw = shape.h * shape.w, stride = shape.c * hw
        out.resize(rows: n)
        let m = T(statisticsRows), g = gamma.value.data, b = beta.value.data
        for c in 0..<shape.c {
            let v = batchSquares[c] / m, inv = 1 / (v + eps).squareRoot()
            variance.data[c] = v
            istd.data[c] = inv
            if let limits = renorm, !frozen {
                // gamma ((x - mu) inv r + d) + beta = gamma ((x - mu) (inv r)) + (gamma d + beta).
                if !freezeRenorm { (renormR.data[c], renormD.data[c]) = limits.correction(mean: mean.data[c], variance: v, runningMean: runningMean.value.data[c], runningVariance: runningVar.value.data[c], eps: eps) }
                let r = renormR.data[c], d = renormD.data[c]
                Self.planesNormalize(x.data + c * hw, out.data + c * hw, n, stride, hw, mean: mean.data[c], istd: inv * r, gamma: g[c], beta: g[c] * d + b[c], relu: fusedReLU)
                continue
            }
            Self.planesNormalize(x.data + c * hw, out.data + c * hw, n, stride, hw, mean: mean.data[c], istd: inv, gamma: g[c], beta: b[c], relu: fusedReLU)
        }
        return out
    }

    /// Backward phase 1: this shard's beta.grad and gamma.grad (sums of g' and g' xhat).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func syncBackwardSums(_ dy: Matrix<T>) {
        guard let x = input, dy.rows == x.rows, dy.cols == shape.count else {
            preconditionFailure("BatchNorm2D.backward needs a training forward of the same shape")
        }
        let hw = shape.h * shape.w, stride = shape.c * hw
        let y: UnsafePointer<T>? = fusedReLU ? UnsafePointer(out.data) : nil
        for c in 0..<shape.c {
            let o = c * hw
            let (sdy, sdyx) = Self.planesGradientSums(dy.data + o, x.data + o, y.map { $0 + o }, dy.rows, stride, hw, mean: mean.data[c], istd: istd.data[c])
            beta.grad.data[c] = sdy
            // sdyx is sum g' z; with renormalization, dgamma = sum g' (r z + d).
            gamma.grad.data[c] = renorm == nil || frozen ? sdyx : renormR.data[c] * sdyx + renormD.data[c] * sdy
        }
    }

    /// Backward phase 2: dx from the batch's two sums, as `backward` with M the batch's values.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func syncBackwardInput(_ dy: Matrix<T>, batchSumDy: UnsafePointer<T>, batchSumDyXhat: UnsafePointer<T>) -> Matrix<T> {
        let x = input!, n = dy.rows, hw = shape.h * shape.w, stride = shape.c * hw
        inputGrad.resize(rows: n)
        guard computesInputGradient else { return inputGrad }
        let m = T(statisticsRows)
        let y: UnsafePointer<T>? = fusedReLU ? UnsafePointer(out.data) : nil
        for c in 0..<shape.c {
            let o = c * hw, inv = istd.data[c]
            var k = gamma.value.data[c] * inv, a = batchSumDy[c] / m, bq = batchSumDyXhat[c] / m
            if frozen {
                (a, bq) = (0, 0)
            } else if renorm != nil {
                // dx = gamma r inv (g' - mean g' - z mean(g' z)), sum(g' z) = (dgamma - d dbeta) / r.
                let r = renormR.data[c], d = renormD.data[c]
                k *= r
                a = batchSumDy[c] / m
                bq = (batchSumDyXhat[c] - d * batchSumDy[c]) / (r * m)
            }
            Self.planesInputGradient(dy.data + o, x.data + o, y.map { $0 + o }, inputGrad.data + o, n, stride, hw, mean: mean.data[c], istd: inv, k: k, a: a, bq: bq)
        }
        return inputGrad
    }
}
