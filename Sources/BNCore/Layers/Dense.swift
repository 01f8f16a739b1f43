/// Fully connected layer with an optional fused activation:
///     z = x W^T + b,   y = act(z),   W: (out, in) as in PyTorch's `nn.Linear`.
/// `weightLayout: .inOut` stores W transposed, as an (in, out) row-major matrix, so that the
/// forward product is a plain x * Wt (no transposed operand). OpenBLAS runs that shape of the
/// first layer (64x784 by 784x200) about 13% faster than x * W^T on this machine (bnbench);
/// the weight gradient becomes x^T dz, which runs about as fast as dz^T x. The parameter keeps
/// its logical (out, in) shape, so checkpoints and seeds are the same in both layouts.
/// Fusing the bias and the sigmoid into one pass after the product saves two passes over
/// the output per step (forward), and the sigmoid derivative is folded into the bias-gradient
/// pass (backward). `Dense(activation: .sigmoid)` computes exactly `Dense` then `Sigmoid`.
public final class Dense<T: BLASScalar>: SGDFusedBackward {
    /// The activation fused after the product: only the sigmoid, where fusing measurably pays
    /// (dfn2's first layer); other activations are their own layers.
    public enum Activation: Sendable { case identity, sigmoid }
    /// How W is stored: `.outIn` as PyTorch (row-major (out, in)), `.inOut` transposed.
    public enum WeightLayout: Sendable { case outIn, inOut }

    public let inFeatures: Int
    public let outFeatures: Int
    public let activation: Activation
    public let weightLayout: WeightLayout
    public let weight: Parameter<T>  // logical (out, in); stored (in, out) when weightLayout == .inOut
    public let bias: Parameter<T>  // (1, out)
    public var computesInputGradient = true
    /// The products' kernels: the network's.
    public let kernels: Kernels

    /// The input of the most recent forward (owned by the caller; must stay unchanged until backward).
    @usableFromInline var input: Matrix<T>?
    @usableFromInline let output: Matrix<T>  // y: (N, out)
    @usableFromInline let preActivationGrad: Matrix<T>  // dL/dz: (N, out), sigmoid only
    @usableFromInline let inputGrad: Matrix<T>  // (N, in)
    /// When true, `backward` leaves dW to the caller (a data-parallel step computes it in
    /// rows split among its workers, over every shard: `weightGradient(rows:)`) and keeps dz for it.
    public var defersWeightGradient = false
    /// dL/dz of the most recent backward (dy itself without an activation).
    @usableFromInline var lastPreActivationGrad: Matrix<T>?

    public init(inFeatures: Int, outFeatures: Int, activation: Activation = .identity, weightLayout: WeightLayout = .outIn, name: String, kernels: Kernels = Kernels()) {
        self.kernels = kernels
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.activation = activation
        self.weightLayout = weightLayout
        switch weightLayout {
        case .outIn: weight = Parameter(name: "\(name).weight", value: Matrix(rows: outFeatures, cols: inFeatures), shape: [outFeatures, inFeatures])
        case .inOut: weight = Parameter(name: "\(name).weight", value: Matrix(rows: inFeatures, cols: outFeatures), storedTransposed: true)
        }
        bias = Parameter(name: "\(name).bias", value: Matrix(rows: 1, cols: outFeatures), role: .bias)
        parameters = [weight, bias]
        output = Matrix(rows: 0, cols: outFeatures)
        preActivationGrad = Matrix(rows: 0, cols: outFeatures)
        inputGrad = Matrix(rows: 0, cols: inFeatures)
    }

    /// Built once: a computed array would allocate on every call in the training loop.
    public let parameters: [Parameter<T>]

    /// x: (N, in) -> y: (N, out). One GEMM (transpose folded in), then one fused pass act(z + b).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forward(_ x: Matrix<T>, training: Bool) -> Matrix<T> {
        precondition(x.cols == inFeatures, "Dense expects \(inFeatures) input features, got \(x.cols)")
        let n = x.rows, d = outFeatures
        input = x
        output.resize(rows: n)
        let transposedWeight = weightLayout == .outIn
        let ldb = transposedWeight ? inFeatures : d
        // bf16: the bias and sigmoid ride in the matmul's epilogue (one pass over y).
        if T.gemmBias(
            using: kernels, transA: false, transB: transposedWeight, m: n, n: d, k: inFeatures, a: x.data, lda: inFeatures,
            b: weight.value.data, ldb: ldb, bias: bias.value.data, sigmoid: activation == .sigmoid, c: output.data, ldc: d)
        {
            return output
        }
        T.gemm(
            using: kernels, transA: false, transB: transposedWeight, m: n, n: d, k: inFeatures,
            alpha: 1, a: x.data, lda: inFeatures, b: weight.value.data, ldb: ldb,
            beta: 0, c: output.data, ldc: d)
        switch activation {
        case .identity: Elementwise.addBias(output.data, bias: bias.value.data, rows: n, cols: d)
        case .sigmoid: Elementwise.biasSigmoid(output.data, bias: bias.value.data, rows: n, cols: d)
        }
        return output
    }

    /// Writes dL/dW and dL/db; returns dL/dx.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backward(_ dy: Matrix<T>) -> Matrix<T> {
        backward(dy, learningRate: nil)
    }

    /// Backward fused with the SGD update: W += -lr dz^T x lands straight in W (GEMM with
    /// beta = 1), so the weight gradient is never stored and no separate update pass runs.
    /// dx is computed first, from the weights the forward pass used.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func backward(_ dy: Matrix<T>, sgdLearningRate: T) -> Matrix<T> {
        backward(dy, learningRate: sgdLearningRate)
    }

    /// dz = dy * act'(z);  db = sum over rows of dz;  dx = dz W: (N, in);  dW = dz^T x: (out, in)
    /// (stored as its transpose x^T dz: (in, out) in the .inOut layout).
    /// With `learningRate`, W and b are updated in place instead of storing dW (db is still stored).
    @inlinable
    func backward(_ dy: Matrix<T>, learningRate: T?) -> Matrix<T> {
        guard let x = input else { preconditionFailure("Dense.backward called before forward") }
        let n = dy.rows, d = outFeatures
        precondition(n == x.rows && dy.cols == d, "Dense.backward: dy shape does not match the forward pass")
        let db = bias.grad.data
        var dz = dy.data
        switch activation {
        case .identity:
            Elementwise.columnSums(dy.data, rows: n, cols: d, into: db)
        case .sigmoid:
            // dz = dy * y (1 - y), with the bias gradient summed in the same pass.
            preActivationGrad.resize(rows: n)
            let y = output.data, g = dy.data, z = preActivationGrad.data
            db.update(repeating: 0, count: d)
            for i in 0..<n {
                let yr = y + i * d, gr = g + i * d, zr = z + i * d
                for j in 0..<d {
                    let v = gr[j] * yr[j] * (1 - yr[j])
                    zr[j] = v
                    db[j] += v
                }
            }
            dz = z
        }
        inputGrad.resize(rows: n)
        let outIn = weightLayout == .outIn
        lastPreActivationGrad = activation == .sigmoid ? preActivationGrad : dy
        if computesInputGradient {
            T.gemm(
                using: kernels, transA: false, transB: !outIn, m: n, n: inFeatures, k: d,
                alpha: 1, a: dz, lda: d, b: weight.value.data, ldb: outIn ? inFeatures : d,
                beta: 0, c: inputGrad.data, ldc: inFeatures)
        }
        if defersWeightGradient && learningRate == nil { return inputGrad }
        // SGD fused (W += -lr dW, beta 1) or the plain gradient (beta 0).
        let (alpha, beta, target): (T, T, UnsafeMutablePointer<T>) = learningRate.map { (-$0, 1, weight.value.data) } ?? (1, 0, weight.grad.data)
        if outIn {
            T.gemm(
                using: kernels, transA: true, transB: false, m: d, n: inFeatures, k: n,
                alpha: alpha, a: dz, lda: d, b: x.data, ldb: inFeatures,
                beta: beta, c: target, ldc: inFeatures)
        } else {
            T.gemm(
                using: kernels, transA: true, transB: false, m: inFeatures, n: d, k: n,
                alpha: alpha, a: x.data, lda: inFeatures, b: dz, ldb: d,
                beta: beta, c: target, ldc: d)
        }
        if let lr = learningRate { T.sgdUpdate(n: d, learningRate: lr, gradient: db, weights: bias.value.data) }
        return inputGrad
    }

    /// Rows of dW's storage (in features for `.inOut`, out features for `.outIn`): the axis a
    /// data-parallel step splits dW along, among its workers.
    public var weightGradientRows: Int { weightLayout == .inOut ? inFeatures : outFeatures }

    /// Storage rows `rows` of dW from this shard's last backward (its x and dz), written to
    /// `target`, the first row's first element, or (accumulate) added on as the same chain:
    ///     .inOut: dW[a..<b, :] = x[:, a..<b]^T dz    .outIn: dW[a..<b, :] = dz[:, a..<b]^T x
    /// Each element is one chain of fused multiply-adds over the batch rows in order
    /// (`BLASScalar.rankUpdate`), so shard by shard, over any split of the rows, it is the same
    /// bits: what makes a data-parallel step's dW independent of its worker count.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func weightGradient(rows r: Range<Int>, into target: UnsafeMutablePointer<T>, accumulate: Bool) {
        guard let x = input, let dz = lastPreActivationGrad else { preconditionFailure("Dense.weightGradient needs a backward first") }
        let n = x.rows, a = r.lowerBound
        if weightLayout == .inOut {
            T.rankUpdate(m: r.count, n: outFeatures, k: n, a: x.data + a, lda: inFeatures, b: dz.data, ldb: outFeatures,
                         c: target, ldc: outFeatures, accumulate: accumulate)
        } else {
            T.rankUpdate(m: r.count, n: inFeatures, k: n, a: dz.data + a, lda: outFeatures, b: x.data, ldb: inFeatures,
                         c: target, ldc: inFeatures, accumulate: accumulate)
        }
    }
}
