/// A dense row-major matrix with reference semantics, backed by one heap buffer.
///
/// Layers keep their outputs and gradients in `Matrix` buffers sized once and reused: the
/// row count can shrink or grow within `capacityRows` (the last, partial minibatch) without
/// allocating, which keeps the training loop allocation-free after the first step.
public final class Matrix<T: BLASScalar> {
    /// Rows in use; `rows <= capacityRows`.
    public var rows: Int
    public let cols: Int
    public var capacityRows: Int
    /// `capacityRows * cols` elements; element (r, c) is at `data[r * cols + c]`.
    public var data: UnsafeMutablePointer<T>
    /// False for a view into another matrix's storage (see `init(viewOf:)`, `share(storageOf:)`).
    public private(set) var ownsStorage: Bool
    /// Keeps a view's underlying matrix alive.
    private var base: Matrix<T>?

    /// A zero-filled (rows, cols) matrix with room for `capacityRows` rows.
    public convenience init(rows: Int, cols: Int, capacityRows: Int? = nil) {
        self.init(rows: rows, cols: cols, capacityRows: capacityRows, zeroed: true)
    }

    /// A (rows, cols) matrix; with `zeroed: false` the elements start undefined and the
    /// caller must write every one (decoders filling a large buffer once).
    public init(rows: Int, cols: Int, capacityRows: Int? = nil, zeroed: Bool) {
        precondition(rows >= 0 && cols >= 0, "matrix dimensions must be non-negative")
        let capacity = max(capacityRows ?? rows, rows)
        self.rows = rows
        self.cols = cols
        self.capacityRows = capacity
        self.ownsStorage = true
        self.data = .allocate(capacity: max(capacity * cols, 1))
        if zeroed { self.data.initialize(repeating: 0, count: max(capacity * cols, 1)) }
    }

    /// A view of rows `row ..< row + rows` of `base`, sharing its storage (no copy). Re-point
    /// it at other rows with `view(of:row:rows:)`: one view serves every batch of a pass.
    public init(viewOf base: Matrix<T>, row: Int = 0, rows n: Int = 0) {
        precondition(row >= 0 && n >= 0 && row + n <= base.rows, "view out of range")
        self.rows = n
        self.cols = base.cols
        self.capacityRows = n
        self.ownsStorage = false
        self.data = base.data + row * base.cols
        self.base = base
    }

    /// Points this view at rows `row ..< row + rows` of `base`, sharing its storage.
    public func view(of base: Matrix<T>, row: Int, rows n: Int) {
        precondition(!ownsStorage, "view(of:) needs a matrix made with init(viewOf:)")
        precondition(base.cols == cols && row >= 0 && n >= 0 && row + n <= base.rows, "view out of range")
        self.base = base
        data = base.data + row * cols
        rows = n
        capacityRows = n
    }

    /// Gives up this matrix's own storage and uses `other`'s, which must have the same shape.
    /// Data-parallel replicas hold the model's parameters and buffers this way: the model's
    /// update is every replica's, and nothing is copied per step.
    public func share(storageOf other: Matrix<T>) {
        precondition(other.rows == rows && other.cols == cols, "shared storage must have the same shape")
        if ownsStorage { data.deallocate() }
        ownsStorage = false
        base = other
        data = other.data
        capacityRows = rows
    }

    /// A (rows, cols) matrix holding `values` in row-major order.
    public convenience init(rows: Int, cols: Int, values: [T]) {
        precondition(values.count == rows * cols, "expected \(rows * cols) values, got \(values.count)")
        self.init(rows: rows, cols: cols)
        values.withUnsafeBufferPointer { src in
            data.update(from: src.baseAddress!, count: values.count)
        }
    }

    deinit {
        if ownsStorage { data.deallocate() }
    }

    public var count: Int { rows * cols }

    /// The elements in use, as a buffer.
    @inlinable
    public var buffer: UnsafeMutableBufferPointer<T> { UnsafeMutableBufferPointer(start: data, count: rows * cols) }

    @inlinable
    public subscript(r: Int, c: Int) -> T {
        get { data[r * cols + c] }
        set { data[r * cols + c] = newValue }
    }

    /// Sets the number of rows in use. Allocates only when `n` exceeds the capacity; the
    /// contents are then undefined (zeroed), so callers overwrite them.
    @inlinable
    public func resize(rows n: Int) {
        if n > capacityRows {
            precondition(ownsStorage, "cannot grow a view")
            data.deallocate()
            data = .allocate(capacity: n * cols)
            data.initialize(repeating: 0, count: n * cols)
            capacityRows = n
        }
        rows = n
    }

    /// Sets every element in use to `value`.
    public func fill(_ value: T) { data.update(repeating: value, count: rows * cols) }

    /// Copies the shape in use and contents of `other` (same column count).
    public func copy(from other: Matrix<T>) {
        precondition(other.cols == cols, "column mismatch: \(other.cols) vs \(cols)")
        resize(rows: other.rows)
        data.update(from: other.data, count: other.rows * cols)
    }

    /// The elements in use, row-major.
    public func toArray() -> [T] { Array(buffer) }

    /// Element-wise conversion to another scalar type (for example Float -> Double for checks).
    public func converted<U: BLASScalar>(to _: U.Type) -> Matrix<U> {
        let out = Matrix<U>(rows: rows, cols: cols)
        for i in 0..<count { out.data[i] = U(data[i]) }
        return out
    }
}

/// The textbook triple loop, kept as the reference that the BLAS path is tested against.
/// Row-major `C = alpha * op(A) * op(B) + beta * C` with the same conventions as `BLASScalar.gemm`.
public func referenceGEMM<T: BLASScalar>(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
    alpha: T, a: UnsafePointer<T>, lda: Int,
    b: UnsafePointer<T>, ldb: Int,
    beta: T, c: UnsafeMutablePointer<T>, ldc: Int
) {
    for i in 0..<m {
        for j in 0..<n {
            var sum: T = 0
            for p in 0..<k {
                let aip = transA ? a[p * lda + i] : a[i * lda + p]
                let bpj = transB ? b[j * ldb + p] : b[p * ldb + j]
                sum += aip * bpj
            }
            c[i * ldc + j] = alpha * sum + (beta == 0 ? 0 : beta * c[i * ldc + j])
        }
    }
}
