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

    /// One tensor's header entry: where its bytes lie in the data section.
    public struct Entry: Equatable, Sendable {
        public var dtype: DType
        public var shape: [Int]
        public var begin: Int
        public var end: Int
    }

    /// The 8-byte little-endian header length at the start of a file, checked against the
    /// file's size.
    public static func headerLength(_ first8: [UInt8], fileBytes: Int) throws -> Int {
        func fail(_ s: String) -> DecodeError { DecodeError(reason: s) }
        guard first8.count >= 8, fileBytes >= 8 else { throw fail("file is \(fileBytes) bytes, too short for a safetensors header") }
        let n = first8.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard n <= UInt64(maxHeaderBytes) else { throw fail("header length \(n) is implausible (not a safetensors file?)") }
        guard Int(n) <= fileBytes - 8 else { throw fail("header length \(n) exceeds the \(fileBytes - 8) bytes after it (truncated file?)") }
        return Int(n)
    }

    /// Parses and validates the JSON header alone, for a data section of `dataCount` bytes:
    /// every shape's byte size is computed without overflow and must equal its offsets' span,
    /// spans must lie inside the data and must not overlap.
    public static func decodeHeader(_ headerBytes: [UInt8], dataCount: Int) throws -> (entries: [String: Entry], metadata: [String: String]) {
        func fail(_ s: String) -> DecodeError { DecodeError(reason: s) }
        guard let object = try? JSONSerialization.jsonObject(with: Data(headerBytes)), let header = object as? [String: Any] else {
            throw fail("header is not a JSON object (not a safetensors file, or damaged)")
        }
        var metadata: [String: String] = [:]
        var entries: [String: Entry] = [:]
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
            guard shapeAny.count <= 8 else { throw fail("tensor '\(name)' has \(shapeAny.count) dimensions; bntrain's tensors have at most 2") }
            let shape = try shapeAny.map { v -> Int in
                guard let n = v as? NSNumber, let i = Int(exactly: n.doubleValue), i >= 0, i <= 1 << 31 else {
                    throw fail("tensor '\(name)' has an invalid shape")
                }
                return i
            }
            let offs = try offsAny.map { v -> Int in
                guard let n = v as? NSNumber, let i = Int64(exactly: n.doubleValue), i >= 0, i <= Int64(dataCount) else {
                    throw fail("tensor '\(name)' has data offsets outside the file's \(dataCount) data bytes (truncated file?)")
                }
                return Int(i)
            }
            // Element count, then bytes: both products checked for overflow.
            var count = 1, overflow = false
            for d in shape {
                let (p, o) = count.multipliedReportingOverflow(by: d)
                count = p
                overflow = overflow || o
            }
            let (bytes, o2) = count.multipliedReportingOverflow(by: dtype.size)
            overflow = overflow || o2
            guard !overflow, offs[0] <= offs[1], offs[1] - offs[0] == bytes else {
                throw fail("tensor '\(name)': shape \(shape) of \(dtype.rawValue) needs \(overflow ? "more bytes than can be addressed" : "\(bytes) bytes") but its offsets span \(offs[1] - offs[0])")
            }
            entries[name] = Entry(dtype: dtype, shape: shape, begin: offs[0], end: offs[1])
        }
        let spans = entries.values.map { ($0.begin, $0.end) }.sorted { $0.0 < $1.0 }
        for (a, b) in zip(spans, spans.dropFirst()) where b.0 < a.1 {
            throw fail("tensors overlap in the data section (damaged file)")
        }
        return (entries, metadata)
    }

    /// Parses and validates a whole file's bytes. Every offset and size is checked against
    /// the data actually present before anything is copied.
    public static func decode(_ bytes: [UInt8]) throws -> (tensors: [String: Tensor], metadata: [String: String]) {
        let n = try headerLength(Array(bytes.prefix(8)), fileBytes: bytes.count)
        let dataStart = 8 + n
        let (entries, metadata) = try decodeHeader(Array(bytes[8..<dataStart]), dataCount: bytes.count - dataStart)
        var tensors: [String: Tensor] = [:]
        for (name, e) in entries {
            tensors[name] = Tensor(dtype: e.dtype, shape: e.shape, bytes: Array(bytes[(dataStart + e.begin)..<(dataStart + e.end)]))
        }
        return (tensors, metadata)
    }
}
