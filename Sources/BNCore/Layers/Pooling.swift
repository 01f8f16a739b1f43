import CKernels

/// 2-D pooling over k x k windows with stride s, no padding (PyTorch's `nn.MaxPool2d(k, s)`
/// and `nn.AvgPool2d(k, s)`; global average pooling is the average over the whole H x W):
///     max: y[n, c, i, j] = max_{u, v < k} x[n, c, s i + u, s j + v]   (dx: dy to the argmax; the
///          first maximum in row-major window order wins a tie, as PyTorch's CPU kernel)
///     avg: y[n, c, i, j] = mean_{u, v < k} x[...]                       (dx: dy / k^2 to each)
/// x: (N, C, H, W) -> y: (N, C, OH, OW), OH = (H - k) / s + 1.
public final class Pool2D<T: BLASScalar>: Layer {
    public enum Kind: String, Sendable { case max, average }
    public let kind: Kind
    public let input: ImageShape, output: ImageShape
    public let kernelH: Int, kernelW: Int, stride: Int
    public var inFeatures: Int { input.count }
    public var outFeatures: Int { output.count }
    public var computesInputGradient = true
    public let parameters: [Parameter<T>] = []

    @usableFromInline let out: Matrix<T>
    @usableFromInline let inputGrad: Matrix<T>
    /// Max pooling: for each output element, the offset of its maximum within the example.
    @usableFromInline var argmax: UnsafeMutablePointer<Int32>
    @usableFromInline var argmaxCapacity = 0

    /// `kernel: nil` pools the whole H x W (global average pooling).
    public init(_ kind: Kind, input: ImageShape, kernel: Int?, stride: Int? = nil) {
        self.kind = kind
        self.input = input
        kernelH = kernel ?? input.h
        kernelW = kernel ?? input.w
        self.stride = stride ?? kernel ?? 1
        precondition(kernelH >= 1 && kernelH <= input.h && kernelW <= input.w && self.stride >= 1, "pooling window does not fit its input")
        output = ImageShape(input.c, (input.h - kernelH) / self.stride + 1, (input.w - kernelW) / self.stride + 1)
        out = Matrix(rows: 0, cols: output.count)
        inputGrad = Matrix(rows: 0, cols: input.count)
        argmax = .allocate(capacity: 1)
    }

    deinit { argmax.deallocate() }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forward(_ x: Matrix<T>, training: Bool) -> Matrix<T> {
        precondition(x.cols == input.count, "pooling expects \(input) per example, got \(x.cols) values")
        let n = x.rows
        out.resize(rows: n)
        if kind == .max && n * output.count > argmaxCapacity {
            argmax.deallocate()
            argmaxCapacity = n * output.count
            argmax = .allocate(capacity: argmaxCapacity)
        }
        let (H, W, OH, OW, s, kh, kw) = (input.h, input.w, output.h, output.w, stride, kernelH, kernelW)
        let inv = 1 / T(kh * kw)
        if kind == .max && kh == 2 && kw == 2 && s == 2 {
            // The common 2x2/2 max pool: two input rows per output row, no inner window loops.
            // Ties go to the first in row-major order, as below. Float runs the same loop in C
            // (vectorized, AVX-512 where there is).
            if T.self == Float.self {
                bn_maxpool2x2_f32(float32(x.data), float32Buffer(out.data), argmax, n, input.c, H, W, OH, OW)
                return out
            }
            for e in 0..<n {
                let xe = x.data + e * input.count, ye = out.data + e * output.count, ae = argmax + e * output.count
                for c in 0..<input.c {
                    for i in 0..<OH {
                        let r0 = (c * H + 2 * i) * W, r1 = r0 + W
                        let yo = ye + (c * OH + i) * OW, ao = ae + (c * OH + i) * OW
                        for j in 0..<OW {
                            let q = 2 * j
                            var best = xe[r0 + q], at = r0 + q
                            if xe[r0 + q + 1] > best { best = xe[r0 + q + 1]; at = r0 + q + 1 }
                            if xe[r1 + q] > best { best = xe[r1 + q]; at = r1 + q }
                            if xe[r1 + q + 1] > best { best = xe[r1 + q + 1]; at = r1 + q + 1 }
                            yo[j] = best
                            ao[j] = Int32(at)
                        }
                    }
                }
            }
            return out
        }
        for e in 0..<n {
            let xe = x.data + e * input.count, ye = out.data + e * output.count
            for c in 0..<input.c {
                let xc = xe + c * H * W
                for i in 0..<OH {
                    for j in 0..<OW {
                        let o = (c * OH + i) * OW + j
                        if kind == .max {
                            var best = xc[(s * i) * W + s * j], at = (s * i) * W + s * j
                            for u in 0..<kh {
                                for v in 0..<kw {
                                    let q = (s * i + u) * W + s * j + v
                                    if xc[q] > best {
                                        best = xc[q]
                                        at = q
                                    }
                                }
                            }
                            ye[o] = best
                            argmax[e * output.count + o] = Int32(c * H * W + at)
                        } else {
                            var acc: T = 0
                            for u in 0..<kh { for v in 0..<kw { acc += xc[(s * i + u) * W + s * j + v] } }
                            ye[o] = acc * inv
                        }
                    }
                }
            }
        }
        return out
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backward(_ dy: Matrix<T>) -> Matrix<T> {
        precondition(dy.rows == out.rows && dy.cols == output.count, "pooling backward: shape mismatch")
        let n = dy.rows
        inputGrad.resize(rows: n)
        inputGrad.data.update(repeating: 0, count: n * input.count)
        let (H, W, OH, OW, s, kh, kw) = (input.h, input.w, output.h, output.w, stride, kernelH, kernelW)
        let inv = 1 / T(kh * kw)
        for e in 0..<n {
            let g = dy.data + e * output.count, dx = inputGrad.data + e * input.count
            if kind == .max {
                for o in 0..<output.count { dx[Int(argmax[e * output.count + o])] += g[o] }
                continue
            }
            for c in 0..<input.c {
                for i in 0..<OH {
                    for j in 0..<OW {
                        let v = g[(c * OH + i) * OW + j] * inv
                        for u in 0..<kh { for w in 0..<kw { dx[c * H * W + (s * i + u) * W + s * j + w] += v } }
                    }
                }
            }
        }
        return inputGrad
    }
}
