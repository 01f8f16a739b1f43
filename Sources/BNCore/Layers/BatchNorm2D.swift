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
    public let parameters: [Parameter<T>]
    public let buffers: [Buffer<T>]

    @usableFromInline let out: Matrix<T>, inputGrad: Matrix<T>
    @usableFromInline let mean: Matrix<T>, istd: Matrix<T>  // (1, C)
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
        gamma = Parameter(name: "\(name).weight", value: Matrix(rows: 1, cols: c, values: Array(repeating: 1, count: c)))
        beta = Parameter(name: "\(name).bias", value: Matrix(rows: 1, cols: c))
        runningMean = Buffer(name: "\(name).running_mean", value: Matrix(rows: 1, cols: c))
        runningVar = Buffer(name: "\(name).running_var", value: Matrix(rows: 1, cols: c, values: Array(repeating: 1, count: c)))
        parameters = [gamma, beta]
        buffers = [runningMean, runningVar]
        out = Matrix(rows: 0, cols: shape.count)
        inputGrad = Matrix(rows: 0, cols: shape.count)
        mean = Matrix(rows: 1, cols: c)
        istd = Matrix(rows: 1, cols: c)
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
        input = x
        let m = T(n * hw)
        let bessel: T = (runningVariance == .unbiased && n * hw > 1) ? m / (m - 1) : 1
        let float = T.self == Float.self
        for c in 0..<C {
            // Two passes (mean, then centred squares) for accuracy, each a 16-lane reduction
            // per plane; Float runs the C kernels (AVX-512 where there is), the same bits as
            // Elementwise.sum and squaredDeviation.
            let xc = x.data + c * hw, yc = out.data + c * hw
            var s: T = 0
            if float { s = T(Float(bn_planes_sum_f32(float32(xc), n, C * hw, hw))) } else {
                for e in 0..<n { s += Elementwise.sum(xc + e * C * hw, hw) }
            }
            let mu = s / m
            var v: T = 0
            if float { v = T(Float(bn_planes_squared_deviation_f32(float32(xc), n, C * hw, hw, float32(mu)))) } else {
                for e in 0..<n { v += Elementwise.squaredDeviation(xc + e * C * hw, hw, from: mu) }
            }
            v /= m
            let inv = 1 / (v + eps).squareRoot()
            mean.data[c] = mu
            istd.data[c] = inv
            if float {
                bn_planes_normalize_f32(float32(xc), float32Buffer(yc), n, C * hw, hw, float32(mu), float32(inv), float32(g[c]), float32(b[c]), fusedReLU ? 1 : 0)
            } else {
                for e in 0..<n {
                    let o = e * C * hw
                    Self.normalize(xc + o, yc + o, hw, mean: mu, istd: inv, gamma: g[c], beta: b[c], relu: fusedReLU)
                }
            }
            let rm = runningMean.value.data, rv = runningVar.value.data
            rm[c] = momentum * rm[c] + (1 - momentum) * mu
            rv[c] = momentum * rv[c] + (1 - momentum) * v * bessel
        }
        batchesTracked += 1
        return out
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backward(_ dy: Matrix<T>) -> Matrix<T> {
        guard lastForwardWasTraining, let x = input, dy.rows == x.rows, dy.cols == shape.count else {
            preconditionFailure("BatchNorm2D.backward needs a training forward of the same shape")
        }
        let n = dy.rows, C = shape.c, hw = shape.h * shape.w
        inputGrad.resize(rows: n)
        let m = T(n * hw)
        let y: UnsafePointer<T>? = fusedReLU ? UnsafePointer(out.data) : nil
        let float = T.self == Float.self
        for c in 0..<C {
            let mu = mean.data[c], inv = istd.data[c]
            let o = c * hw, yc = y.map { $0 + o }
            var sdy: T = 0, sdyx: T = 0
            if float {
                var (s1, s2): (Float, Float) = (0, 0)
                bn_planes_gradient_sums_f32(float32(dy.data + o), float32(x.data + o), yc.map { float32($0) }, n, C * hw, hw, float32(mu), float32(inv), &s1, &s2)
                (sdy, sdyx) = (T(s1), T(s2))
            } else {
                for e in 0..<n {
                    let (a, b) = Self.gradientSums(dy.data + o + e * C * hw, x.data + o + e * C * hw, yc.map { $0 + e * C * hw }, hw, mean: mu, istd: inv)
                    sdy += a
                    sdyx += b
                }
            }
            beta.grad.data[c] = sdy
            gamma.grad.data[c] = sdyx
            guard computesInputGradient else { continue }
            let k = gamma.value.data[c] * inv, a = sdy / m, bq = sdyx / m
            if float {
                bn_planes_input_gradient_f32(float32(dy.data + o), float32(x.data + o), yc.map { float32($0) }, float32Buffer(inputGrad.data + o), n, C * hw, hw,
                                             float32(mu), float32(inv), float32(k), float32(a), float32(bq))
                continue
            }
            for e in 0..<n {
                let q = o + e * C * hw
                Self.inputGradient(dy.data + q, x.data + q, yc.map { $0 + e * C * hw }, inputGrad.data + q, hw, mean: mu, istd: inv, k: k, a: a, bq: bq)
            }
        }
        return inputGrad
    }

    // Row kernels over one (example, channel) plane of n = H W values, for Double (the checks):
    // Float runs the C kernels (CKernels' bn_planes_*), whose 16-lane sums have the lane layout
    // of Elementwise.sum/dot. xhat = (x - mu) istd is computed by the same expression everywhere.

    /// y = gamma xhat + beta, then max(y, 0) if relu (NaN -> 0, as the ReLU layer).
    @inlinable
    static func normalize(_ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ n: Int, mean mu: T, istd inv: T, gamma g: T, beta b: T, relu: Bool) {
        var i = 0
        if T.self == Float.self {
            let fx = UnsafeRawPointer(x), fy = UnsafeMutableRawPointer(y)
            let vm = SIMD16<Float>(repeating: Float(mu)), vi = SIMD16<Float>(repeating: Float(inv))
            let vg = SIMD16<Float>(repeating: Float(g)), vb = SIMD16<Float>(repeating: Float(b))
            while i + 16 <= n {
                var v = vg * ((fx.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self) - vm) * vi) + vb
                if relu { v.replace(with: 0, where: .!(v .> 0)) }
                fy.storeBytes(of: v, toByteOffset: 4 * i, as: SIMD16<Float>.self)
                i += 16
            }
        }
        while i < n {
            let v = g * ((x[i] - mu) * inv) + b
            y[i] = relu ? (v > 0 ? v : 0) : v
            i += 1
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

    /// (sum g', sum g' xhat) with g' = dy, or dy where y > 0 and 0 elsewhere when y is given.
    @inlinable
    static func gradientSums(_ dy: UnsafePointer<T>, _ x: UnsafePointer<T>, _ y: UnsafePointer<T>?, _ n: Int, mean mu: T, istd inv: T) -> (T, T) {
        var s1: T = 0, s2: T = 0
        var i = 0
        if T.self == Float.self {
            let fd = UnsafeRawPointer(dy), fx = UnsafeRawPointer(x), fyr = y.map { UnsafeRawPointer($0) }
            let vm = SIMD16<Float>(repeating: Float(mu)), vi = SIMD16<Float>(repeating: Float(inv))
            var a1 = SIMD16<Float>(), a2 = SIMD16<Float>()
            while i + 16 <= n {
                var g = fd.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self)
                if let fyr { g.replace(with: 0, where: .!(fyr.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self) .> 0)) }
                a1 += g
                a2 += g * ((fx.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self) - vm) * vi)
                i += 16
            }
            (s1, s2) = (T(a1.sum()), T(a2.sum()))
        }
        // The tail (all of it for Double), continuing the lane sums as Elementwise.sum does.
        while i < n {
            let g: T = (y.map { $0[i] > 0 } ?? true) ? dy[i] : 0
            s1 += g
            s2 += g * ((x[i] - mu) * inv)
            i += 1
        }
        return (s1, s2)
    }

    /// dx = k (g' - a - xhat bq), k = gamma istd, a = sum g' / M, bq = sum(g' xhat) / M.
    @inlinable
    static func inputGradient(_ dy: UnsafePointer<T>, _ x: UnsafePointer<T>, _ y: UnsafePointer<T>?, _ dx: UnsafeMutablePointer<T>, _ n: Int, mean mu: T, istd inv: T, k: T, a: T, bq: T) {
        var i = 0
        if T.self == Float.self {
            let fd = UnsafeRawPointer(dy), fx = UnsafeRawPointer(x), fyr = y.map { UnsafeRawPointer($0) }, fo = UnsafeMutableRawPointer(dx)
            let vm = SIMD16<Float>(repeating: Float(mu)), vi = SIMD16<Float>(repeating: Float(inv))
            let vk = SIMD16<Float>(repeating: Float(k)), va = SIMD16<Float>(repeating: Float(a)), vb = SIMD16<Float>(repeating: Float(bq))
            while i + 16 <= n {
                var g = fd.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self)
                if let fyr { g.replace(with: 0, where: .!(fyr.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self) .> 0)) }
                let t = (fx.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self) - vm) * vi
                fo.storeBytes(of: vk * (g - va - t * vb), toByteOffset: 4 * i, as: SIMD16<Float>.self)
                i += 16
            }
        }
        while i < n {
            let g: T = (y.map { $0[i] > 0 } ?? true) ? dy[i] : 0
            dx[i] = k * (g - a - ((x[i] - mu) * inv) * bq)
            i += 1
        }
    }
}
