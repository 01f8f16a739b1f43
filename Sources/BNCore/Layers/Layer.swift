import CKernels

/// A learnable tensor and its gradient, named as PyTorch's `state_dict` would name it
/// (`fc1.weight`, `bn.bias`, ...), with PyTorch's logical layout (Linear weight is (out, in)).
///
/// `storedTransposed`: `value` and `grad` hold the transpose of the logical 2-D tensor
/// (shape [r, c] stored as a row-major (c, r) matrix), a layout a layer may choose because
/// its products run faster that way. Anything that crosses the model's boundary
/// (checkpoints, initialisation) goes through `logicalIndex`, so files and seeds do not
/// depend on the storage layout.
public final class Parameter<T: BLASScalar> {
    public let name: String
    public let value: Matrix<T>
    public let grad: Matrix<T>
    /// The tensor's logical shape, as PyTorch would report it ([out, in] or [n]).
    public let shape: [Int]
    public let storedTransposed: Bool
    /// What the tensor does in its layer, declared by the layer: weight decay's `weights`
    /// scope and gradcheck's choice of starting values read it, never the shape.
    public let role: Role

    public enum Role: Sendable {
        /// A linear map's weights (fc matrices, conv kernels): decayed under `--decay weights`.
        case weight
        /// The additive bias of a linear map.
        case bias
        /// A normalisation layer's per-feature scale (gamma, initialised to 1).
        case gain
        /// A normalisation layer's per-feature shift (beta, initialised to 0).
        case shift
    }

    /// `shape` defaults to [cols] for a single row (a vector), else [rows, cols]; with
    /// `storedTransposed` it defaults to [cols, rows].
    public init(name: String, value: Matrix<T>, shape: [Int]? = nil, storedTransposed: Bool = false, role: Role = .weight) {
        self.name = name
        self.value = value
        self.role = role
        self.grad = Matrix(rows: value.rows, cols: value.cols)
        self.storedTransposed = storedTransposed
        if storedTransposed {
            self.shape = shape ?? [value.cols, value.rows]
            precondition(self.shape == [value.cols, value.rows], "a transposed parameter's shape is its storage's transpose")
        } else {
            self.shape = shape ?? (value.rows == 1 ? [value.cols] : [value.rows, value.cols])
        }
    }

    /// Where element `k` of the logical tensor (row-major in `shape`) lives in `value.data`.
    @inlinable
    public func logicalIndex(_ k: Int) -> Int {
        guard storedTransposed else { return k }
        let (r, c) = (k / shape[1], k % shape[1])
        return c * shape[0] + r
    }

    /// The values in logical (PyTorch) row-major order.
    public func logicalValues() -> [T] {
        [T](unsafeUninitializedCapacity: value.count) { out, count in
            copyToLogical(from: UnsafePointer(value.data), to: out.baseAddress!)
            count = value.count
        }
    }

    /// Sets the values from logical (PyTorch) row-major order; `values.count == value.count`.
    public func setLogicalValues<C: Collection>(_ values: C) where C.Element == T {
        precondition(values.count == value.count, "\(name): \(values.count) values for \(value.count) elements")
        let done: Void? = values.withContiguousStorageIfAvailable { copyFromLogical(from: $0.baseAddress!, to: value.data) }
        if done == nil { setLogicalValues(Array(values)) }
    }

    /// Copies a tensor held in this parameter's storage layout (`value`, `grad`, or an
    /// optimizer's moment of the same shape) into logical row-major order: `value.count`
    /// elements from `storage` to `logical`.
    public func copyToLogical(from storage: UnsafePointer<T>, to logical: UnsafeMutablePointer<T>) {
        // Storage is a row-major (c, r) matrix for the logical [r, c].
        if storedTransposed { Self.transpose(storage, rows: shape[1], cols: shape[0], to: logical) } else { logical.update(from: storage, count: value.count) }
    }

    /// The inverse of `copyToLogical`: logical row-major order into the storage layout.
    public func copyFromLogical(from logical: UnsafePointer<T>, to storage: UnsafeMutablePointer<T>) {
        if storedTransposed { Self.transpose(logical, rows: shape[0], cols: shape[1], to: storage) } else { storage.update(from: logical, count: value.count) }
    }

    /// dst (cols x rows) = transpose of src (rows x cols), both row-major. The elements move
    /// as bit patterns through a C kernel, so no generic code runs per element.
    static func transpose(_ src: UnsafePointer<T>, rows: Int, cols: Int, to dst: UnsafeMutablePointer<T>) {
        switch MemoryLayout<T>.size {
        case 4:
            UnsafeRawPointer(src).withMemoryRebound(to: UInt32.self, capacity: rows * cols) { s in
                UnsafeMutableRawPointer(dst).withMemoryRebound(to: UInt32.self, capacity: rows * cols) { bn_transpose_u32(s, rows, cols, $0) }
            }
        case 8:
            UnsafeRawPointer(src).withMemoryRebound(to: UInt64.self, capacity: rows * cols) { s in
                UnsafeMutableRawPointer(dst).withMemoryRebound(to: UInt64.self, capacity: rows * cols) { bn_transpose_u64(s, rows, cols, $0) }
            }
        default:
            for r in 0..<rows { for c in 0..<cols { dst[c * rows + r] = src[r * cols + c] } }
        }
    }
}

/// A non-learnable tensor that is still part of the model's state (BN running statistics).
public final class Buffer<T: BLASScalar> {
    public let name: String
    public let value: Matrix<T>
    /// The tensor's logical shape ([n] for the BN statistics).
    public let shape: [Int]
    public init(name: String, value: Matrix<T>) {
        self.name = name
        self.value = value
        self.shape = value.rows == 1 ? [value.cols] : [value.rows, value.cols]
    }
}

/// One stage of a sequential network.
///
/// `forward` returns a buffer the layer owns (valid until its next `forward`, or the input
/// itself for a layer that is the identity in that mode); `backward` takes dL/dy for the most
/// recent forward, writes the parameter gradients (overwriting, not accumulating: one backward
/// per step, so no separate zeroing pass is needed) and returns dL/dx in another owned buffer.
/// No layer writes into a tensor it was given: a layer may keep a reference to its input for
/// backward (Dense does), so the input must stay unchanged until then.
///
/// Layers compute gradients; updating parameters is an `Optimizer`'s job.
public protocol Layer<T>: AnyObject {
    associatedtype T: BLASScalar
    /// x: (N, inFeatures) -> y: (N, outFeatures)
    func forward(_ x: Matrix<T>, training: Bool) -> Matrix<T>
    /// dy: (N, outFeatures) -> dx: (N, inFeatures)
    func backward(_ dy: Matrix<T>) -> Matrix<T>
    /// When false, `backward` computes parameter gradients only (the first layer's dx is never
    /// used, and skipping it saves one matrix product per step). Its return value is then unspecified.
    var computesInputGradient: Bool { get set }
    var parameters: [Parameter<T>] { get }
    var buffers: [Buffer<T>] { get }
    var inFeatures: Int { get }
    var outFeatures: Int { get }
}

extension Layer {
    public var buffers: [Buffer<T>] { [] }
}

/// A layer that can fold the plain SGD update p -= lr dL/dp into its backward pass (Dense: the
/// weight-gradient product accumulates -lr dW straight into W). An optimisation the training
/// step uses when the optimizer is plain SGD; `backward` followed by `SGD.step` is its reference.
/// dx is always computed from the parameters the forward pass used.
public protocol SGDFusedBackward<T>: Layer {
    func backward(_ dy: Matrix<T>, sgdLearningRate: T) -> Matrix<T>
}
