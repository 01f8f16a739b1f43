import Foundation

/// The safetensors format (Hugging Face): an 8-byte little-endian header length N, N bytes of
/// UTF-8 JSON mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
/// (offsets relative to the data section) plus an optional "__metadata__" object of string
/// values, then the raw little-endian tensor data. Read by Python's `safetensors`, PyTorch,
/// numpy and others.
public enum SafeTensors {
    public enum DType: String, Sendable {
        case f32 = "F32", f64 = "F64", i64 = "I64"
        public var size: Int { self == .f32 ? 4 : 8 }
    }

    public struct Tensor: Equatable, Sendable {
        public var dtype: DType
        public var shape: [Int]
        /// Little-endian element bytes, `shape.product * dtype.size` of them.
        public var bytes: [UInt8]

        public init(dtype: DType, shape: [Int], bytes: [UInt8]) {
            self.dtype = dtype
            self.shape = shape
            self.bytes = bytes
        }

        public init(floats: UnsafeBufferPointer<Float>, shape: [Int]) {
            self.init(dtype: .f32, shape: shape, bytes: Array(UnsafeRawBufferPointer(floats)))
        }

        public init(int64 value: Int64) {
            var v = value.littleEndian
            self.init(dtype: .i64, shape: [], bytes: withUnsafeBytes(of: &v) { Array($0) })
        }

        public var elementCount: Int { shape.reduce(1, *) }

        /// The elements as Float (F32 as stored; F64 rounded).
        public func floats() -> [Float] {
            switch dtype {
            case .f32: return bytes.withUnsafeBytes { raw in (0..<elementCount).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) } }
            case .f64: return bytes.withUnsafeBytes { raw in (0..<elementCount).map { Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)))) } }
            case .i64: return bytes.withUnsafeBytes { raw in (0..<elementCount).map { Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self))) } }
            }
        }

        /// The single element of an integer scalar (or any one-element tensor).
        public func int64Scalar() -> Int64? {
            guard elementCount == 1 else { return nil }
            switch dtype {
            case .i64: return bytes.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(as: Int64.self)) }
            default: return Int64(exactly: floats()[0])
            }
        }
    }

    public struct DecodeError: Error, CustomStringConvertible, Equatable {
        public let reason: String
        public var description: String { reason }
    }

    /// Largest header accepted (the format's own reference implementation uses 100 MB).
    public static let maxHeaderBytes = 100_000_000

    /// Serialises `tensors` (written in name order) and string `metadata`.
    public static func encode(_ tensors: [String: Tensor], metadata: [String: String]) -> [UInt8] {
        var header: [String: Any] = [:]
        var offset = 0
        let names = tensors.keys.sorted()
        for name in names {
            let t = tensors[name]!
            header[name] = ["dtype": t.dtype.rawValue, "shape": t.shape, "data_offsets": [offset, offset + t.bytes.count]]
            offset += t.bytes.count
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = (try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])).map { [UInt8]($0) } ?? []
        // Pad with spaces so the data section starts 8-byte aligned (as the reference writer does).
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var out: [UInt8] = []
        out.reserveCapacity(8 + json.count + offset)
        var n = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &n) { out += $0 }
        out += json
        for name in names { out += tensors[name]!.bytes }
        return out
    }

    /// Parses and validates a whole file's bytes. Every offset and size is checked against
    /// the data actually present before anything is copied.
    public static func decode(_ bytes: [UInt8]) throws -> (tensors: [String: Tensor], metadata: [String: String]) {
        func fail(_ s: String) -> DecodeError { DecodeError(reason: s) }
        guard bytes.count >= 8 else { throw fail("file is \(bytes.count) bytes, too short for a safetensors header") }
        let n = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard n <= UInt64(maxHeaderBytes) else { throw fail("header length \(n) is implausible (not a safetensors file?)") }
        guard Int(n) <= bytes.count - 8 else { throw fail("header length \(n) exceeds the \(bytes.count - 8) bytes after it (truncated file?)") }
        let headerBytes = Data(bytes[8..<(8 + Int(n))])
        guard let object = try? JSONSerialization.jsonObject(with: headerBytes), let header = object as? [String: Any] else {
            throw fail("header is not a JSON object (not a safetensors file, or damaged)")
        }
        let dataStart = 8 + Int(n)
        let dataCount = bytes.count - dataStart
        var metadata: [String: String] = [:]
        var tensors: [String: Tensor] = [:]
        var spans: [(Int, Int)] = []
        for (name, value) in header {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else { throw fail("__metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v as? String else { throw fail("metadata value for '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let entry = value as? [String: Any], let dtypeName = entry["dtype"] as? String,
                  let shapeAny = entry["shape"] as? [Any], let offsAny = entry["data_offsets"] as? [Any], offsAny.count == 2 else {
                throw fail("tensor '\(name)' lacks dtype, shape or data_offsets")
            }
            guard let dtype = DType(rawValue: dtypeName) else { throw fail("tensor '\(name)' has unsupported dtype \(dtypeName) (bntrain reads F32, F64, I64)") }
            let shape = try shapeAny.map { v -> Int in
                guard let i = (v as? NSNumber)?.intValue, i >= 0, i <= 1 << 31 else { throw fail("tensor '\(name)' has an invalid shape") }
                return i
            }
            let offs = try offsAny.map { v -> Int in
                guard let i = (v as? NSNumber)?.int64Value, i >= 0, i <= Int64(dataCount) else { throw fail("tensor '\(name)' has data offsets outside the file's \(dataCount) data bytes (truncated file?)") }
                return Int(i)
            }
            let (count, overflow) = shape.reduce((1, false)) { acc, d in
                let (p, o) = acc.0.multipliedReportingOverflow(by: d)
                return (p, acc.1 || o)
            }
            guard !overflow, offs[0] <= offs[1], offs[1] - offs[0] == count * dtype.size else {
                throw fail("tensor '\(name)': shape \(shape) of \(dtype.rawValue) needs \(overflow ? "too many" : "\(count * dtype.size)") bytes but its offsets span \(offs[1] - offs[0])")
            }
            spans.append((offs[0], offs[1]))
            tensors[name] = Tensor(dtype: dtype, shape: shape, bytes: Array(bytes[(dataStart + offs[0])..<(dataStart + offs[1])]))
        }
        spans.sort { $0.0 < $1.0 }
        for (a, b) in zip(spans, spans.dropFirst()) where b.0 < a.1 {
            throw fail("tensors overlap in the data section (damaged file)")
        }
        return (tensors, metadata)
    }
}
