/// An image shape: channels, height, width (one example; a batch is N rows of C*H*W values,
/// NCHW row-major, which is also PyTorch's flatten order).
public struct ImageShape: Equatable, Sendable, CustomStringConvertible {
    public var c: Int, h: Int, w: Int
    public init(_ c: Int, _ h: Int, _ w: Int) { (self.c, self.h, self.w) = (c, h, w) }
    public var count: Int { c * h * w }
    public var description: String { "\(c)x\(h)x\(w)" }
}

/// 2-D convolution (PyTorch's `nn.Conv2d`, cross-correlation, zero padding):
///     y[n, o, i, j] = b[o] + sum_{c, u, v} W[o, c, u, v] x[n, c, s i + u - p, s j + v - p]
/// x: (N, C, H, W) -> y: (N, O, OH, OW), OH = (H + 2p - k) / s + 1, W: (O, C, k, k) as PyTorch.
///
/// Per example, im2col unfolds x into col (C k k, OH OW); the forward is one sgemm
/// W (O, C k k) x col -> (O, OH OW), written straight into the output row (NCHW). Backward:
///     dW += dY_n (O, P) x col_n^T (P, C k k),   db = sum dY,   dcol = W^T (C k k, O) x dY_n,
/// and col2im adds dcol back into dx. The columns of every example are kept from the forward
/// (sized once, reused), so backward does not unfold again.
///
/// Conv2D<Float> runs instead on oneDNN's convolution primitives when they are available and
/// chosen (`Kernels.convolution`; thin convolutions stay here, see
/// `ConvolutionKernels.auto`): one plan per batch size, built on first use
/// (`OneDNNConvolution`), faster than im2col at every preset's wide layers (figures in
/// docs/performance.md). Double (the gradient checks) always runs im2col.
public final class Conv2D<T: BLASScalar>: Layer {
    public let input: ImageShape, output: ImageShape
    public let kernel: Int, stride: Int, padding: Int
    public var inFeatures: Int { input.count }
    public var outFeatures: Int { output.count }
    public var computesInputGradient = true
    public let weight: Parameter<T>  // (O, C*k*k) storage = PyTorch's (O, C, k, k) row-major
    public let bias: Parameter<T>  // (1, O)
    public let parameters: [Parameter<T>]

    @usableFromInline let cols: Matrix<T>  // (N, C k k * OH OW): each example's im2col
    @usableFromInline let out: Matrix<T>
    @usableFromInline let inputGrad: Matrix<T>
    @usableFromInline let dcol: Matrix<T>  // (1, C k k * OH OW) scratch
    @usableFromInline var rows = 0

    /// The products' and convolutions' kernels: the network's.
    public let kernels: Kernels
    /// Overrides `kernels.convolution` for this layer (tests compare the two paths).
    public var convolutionOverride: ConvolutionKernels?
    /// oneDNN plans by batch size (training, the last short batch, evaluation), at most
    /// `maxPlans`; the plan the last forward ran, which its backward runs too (nil: im2col).
    @usableFromInline var plans: [OneDNNConvolution] = []
    @usableFromInline var activePlan: OneDNNConvolution?
    /// Set when oneDNN could not build this layer's convolution: it stays on im2col.
    @usableFromInline var oneDNNFailed = false
    static var maxPlans: Int { 6 }

    /// What the last forward ran on: "im2col", or oneDNN's implementations ("jit:avx512_core",
    /// forward first), for summaries and tests.
    public var lastImplementation: String {
        guard let p = activePlan else { return "im2col" }
        return (p.bf16 ? "bf16 " : "") + p.implementations.joined(separator: ",")
    }

    public init(input: ImageShape, outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, name: String, kernels: Kernels = Kernels()) {
        self.kernels = kernels
        precondition(kernel >= 1 && stride >= 1 && padding >= 0 && input.h + 2 * padding >= kernel && input.w + 2 * padding >= kernel, "convolution does not fit its input")
        self.input = input
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        output = ImageShape(outChannels, (input.h + 2 * padding - kernel) / stride + 1, (input.w + 2 * padding - kernel) / stride + 1)
        let ckk = input.c * kernel * kernel
        weight = Parameter(name: "\(name).weight", value: Matrix(rows: outChannels, cols: ckk), shape: [outChannels, input.c, kernel, kernel])
        bias = Parameter(name: "\(name).bias", value: Matrix(rows: 1, cols: outChannels), role: .bias)
        parameters = [weight, bias]
        let p = output.h * output.w
        cols = Matrix(rows: 0, cols: ckk * p)
        out = Matrix(rows: 0, cols: output.count)
        inputGrad = Matrix(rows: 0, cols: input.count)
        dcol = Matrix(rows: 1, cols: ckk * p)
    }

    /// The output columns j whose input column s j + v - p lies inside the image: [lo, hi).
    @inlinable
    func columnRange(_ v: Int) -> (lo: Int, hi: Int) {
        let (s, pd, W, OW) = (stride, padding, input.w, output.w)
        // s j + v - p >= 0  <=>  j >= ceil((p - v) / s);   s j + v - p <= W - 1  <=>  j <= (W - 1 - v + p) / s
        let lo = pd - v > 0 ? (pd - v + s - 1) / s : 0
        let top = W - 1 - v + pd
        let hi = top < 0 ? 0 : min(OW, top / s + 1)
        return (min(lo, hi), hi)
    }

    /// col (C k k, OH OW) of one example x (C, H, W). Each output row is a zero border, a run
    /// of input values (a straight copy when the stride is 1) and another zero border, so the
    /// loops carry no per-element bounds test.
    @inlinable
    func im2col(_ x: UnsafePointer<T>, _ col: UnsafeMutablePointer<T>) {
        let (C, H, W, k, s, pd) = (input.c, input.h, input.w, kernel, stride, padding)
        let (OH, OW) = (output.h, output.w)
        var r = 0
        for c in 0..<C {
            for u in 0..<k {
                for v in 0..<k {
                    let row = col + r * OH * OW
                    let (lo, hi) = columnRange(v)
                    for i in 0..<OH {
                        let y = s * i + u - pd
                        let dst = row + i * OW
                        if y < 0 || y >= H {
                            dst.update(repeating: 0, count: OW)
                            continue
                        }
                        if lo > 0 { dst.update(repeating: 0, count: lo) }
                        if hi < OW { (dst + hi).update(repeating: 0, count: OW - hi) }
                        let src = x + (c * H + y) * W + v - pd
                        if s == 1 {
                            if hi > lo { (dst + lo).update(from: src + lo, count: hi - lo) }
                        } else {
                            for j in lo..<hi { dst[j] = src[s * j] }
                        }
                    }
                    r += 1
                }
            }
        }
    }

    /// dx (C, H, W) += the columns dcol folded back (the adjoint of im2col), over the same
    /// in-bounds spans.
    @inlinable
    func col2im(_ col: UnsafePointer<T>, _ dx: UnsafeMutablePointer<T>) {
        let (C, H, W, k, s, pd) = (input.c, input.h, input.w, kernel, stride, padding)
        let (OH, OW) = (output.h, output.w)
        var r = 0
        for c in 0..<C {
            for u in 0..<k {
                for v in 0..<k {
                    let row = col + r * OH * OW
                    let (lo, hi) = columnRange(v)
                    for i in 0..<OH {
                        let y = s * i + u - pd
                        if y < 0 || y >= H { continue }
                        let dst = dx + (c * H + y) * W + v - pd, src = row + i * OW
                        if s == 1 {
                            for j in lo..<hi { dst[j] += src[j] }
                        } else {
                            for j in lo..<hi { dst[s * j] += src[j] }
                        }
                    }
                    r += 1
                }
            }
        }
    }

    /// The oneDNN plan for a batch of n (built on first use), or nil for im2col: Double, or
    /// im2col chosen, or oneDNN missing or unable to build this convolution.
    @usableFromInline
    func oneDNNPlan(batch n: Int, training: Bool) -> OneDNNConvolution? {
        let choice = convolutionOverride ?? kernels.convolution
        guard T.self == Float.self, choice != .im2col, !oneDNNFailed, let api = OneDNN.shared?.primitives,
              choice == .onednn || input.c * kernel * kernel >= ConvolutionKernels.oneDNNMinimumTaps
        else { return nil }
        if let p = plans.first(where: { $0.batch == n && ($0.trains || !training) && $0.inputGradient == computesInputGradient }) {
            return p
        }
        func build(bf16: Bool, winograd: Bool = false) throws -> OneDNNConvolution {
            try OneDNNConvolution(api: api, input: input, output: output, kernel: kernel, stride: stride, padding: padding, batch: n, inputGradient: computesInputGradient, trains: training, bf16: bf16, winograd: winograd)
        }
        // bf16 where the library has fast bf16 kernels for this shape; else, with `auto`, a
        // 3x3 stride-1 convolution in Winograd's F(4x4, 3x3) where the library has it; else
        // the direct float32 convolution.
        let bf16 = kernels.precision == .bf16 ? try? build(bf16: true) : nil
        let winograd = bf16 == nil && choice == .auto && kernel == 3 && stride == 1 ? try? build(bf16: false, winograd: true) : nil
        guard let p = bf16 ?? winograd ?? (try? build(bf16: false)) else {
            oneDNNFailed = true
            return nil
        }
        plans.removeAll { $0.batch == n }
        if plans.count >= Self.maxPlans { plans.removeFirst() }
        plans.append(p)
        return p
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forward(_ x: Matrix<T>, training: Bool) -> Matrix<T> {
        precondition(x.cols == input.count, "Conv2D expects \(input) = \(input.count) values per example, got \(x.cols)")
        let n = x.rows, ckk = input.c * kernel * kernel, p = output.h * output.w, o = output.c
        rows = n
        activePlan = oneDNNPlan(batch: n, training: training)
        if let plan = activePlan {
            out.resize(rows: n)
            plan.forward(x: Self.float(x.data), weight: Self.float(weight.value.data), bias: Self.float(bias.value.data), y: Self.float(out.data))
            return out
        }
        // Training keeps every example's columns for backward; evaluation (large batches)
        // reuses one example's worth.
        if training { cols.resize(rows: n) }
        out.resize(rows: n)
        for e in 0..<n {
            let col = training ? cols.data + e * ckk * p : dcol.data, y = out.data + e * o * p
            im2col(x.data + e * input.count, col)
            T.gemm(using: kernels, transA: false, transB: false, m: o, n: p, k: ckk, alpha: 1, a: weight.value.data, lda: ckk, b: col, ldb: p, beta: 0, c: y, ldc: p)
            for oc in 0..<o {
                let b = bias.value.data[oc], yr = y + oc * p
                for j in 0..<p { yr[j] += b }
            }
        }
        return out
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backward(_ dy: Matrix<T>) -> Matrix<T> {
        precondition(dy.rows == rows && dy.cols == output.count, "Conv2D.backward: dy shape does not match the forward pass")
        let n = dy.rows, ckk = input.c * kernel * kernel, p = output.h * output.w, o = output.c
        let dw = weight.grad.data, db = bias.grad.data
        inputGrad.resize(rows: n)
        if let plan = activePlan {
            plan.backward(dy: Self.float(dy.data), weight: Self.float(weight.value.data), weightGrad: Self.float(dw), biasGrad: Self.float(db),
                          inputGrad: computesInputGradient ? Self.float(inputGrad.data) : nil)
            return inputGrad
        }
        dw.update(repeating: 0, count: o * ckk)
        db.update(repeating: 0, count: o)
        if computesInputGradient { inputGrad.data.update(repeating: 0, count: n * input.count) }
        for e in 0..<n {
            let g = dy.data + e * o * p, col = cols.data + e * ckk * p
            for oc in 0..<o { db[oc] += Elementwise.sum(g + oc * p, p) }
            // dW (O, Ckk) += dY (O, P) x col^T
            T.gemm(using: kernels, transA: false, transB: true, m: o, n: ckk, k: p, alpha: 1, a: g, lda: p, b: col, ldb: p, beta: 1, c: dw, ldc: ckk)
            guard computesInputGradient else { continue }
            // dcol (Ckk, P) = W^T (Ckk, O) x dY (O, P), folded into dx.
            T.gemm(using: kernels, transA: true, transB: false, m: ckk, n: p, k: o, alpha: 1, a: weight.value.data, lda: ckk, b: g, ldb: p, beta: 0, c: dcol.data, ldc: p)
            col2im(dcol.data, inputGrad.data + e * input.count)
        }
        return inputGrad
    }
}

extension Conv2D {
    /// The same storage as Float (only called when T is Float).
    @inlinable @inline(__always)
    static func float(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<Float> {
        UnsafeMutableRawPointer(p).assumingMemoryBound(to: Float.self)
    }
}

/// The textbook six loops (no im2col, no BLAS): the reference Conv2D is tested against.
public func referenceConv2D<T: BLASScalar>(_ x: [T], input: ImageShape, weight: [T], bias: [T], outChannels: Int, kernel k: Int, stride s: Int, padding p: Int) -> [T] {
    let oh = (input.h + 2 * p - k) / s + 1, ow = (input.w + 2 * p - k) / s + 1
    var y = [T](repeating: 0, count: outChannels * oh * ow)
    for o in 0..<outChannels {
        for i in 0..<oh {
            for j in 0..<ow {
                var acc = bias[o]
                for c in 0..<input.c {
                    for u in 0..<k {
                        for v in 0..<k {
                            let yy = s * i + u - p, xx = s * j + v - p
                            if yy >= 0 && yy < input.h && xx >= 0 && xx < input.w {
                                acc += weight[((o * input.c + c) * k + u) * k + v] * x[(c * input.h + yy) * input.w + xx]
                            }
                        }
                    }
                }
                y[(o * oh + i) * ow + j] = acc
            }
        }
    }
    return y
}
