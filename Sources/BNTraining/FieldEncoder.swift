/// Turns an `Encodable` value into ordered record fields (`[(key, Value)]`), in the order its
/// `encode(to:)` writes them. This is how the `config` record is derived from `RunConfig`
/// (the same encoding that goes into checkpoints as JSON), so the two cannot drift apart.
/// Supports flat values only: strings, integers, doubles (printed exactly, `.exact`) and
/// booleans (`on`/`off`).
struct FieldEncoder: Encoder {
    final class Storage { var fields: [(String, Value)] = [] }
    let storage = Storage()
    var codingPath: [CodingKey] = []
    var userInfo: [CodingUserInfoKey: Any] = [:]

    static func fields<E: Encodable>(of value: E) throws -> [(String, Value)] {
        let e = FieldEncoder()
        try value.encode(to: e)
        return e.storage.fields
    }

    func container<Key: CodingKey>(keyedBy _: Key.Type) -> KeyedEncodingContainer<Key> {
        KeyedEncodingContainer(Keyed<Key>(storage: storage))
    }

    func unkeyedContainer() -> UnkeyedEncodingContainer { fatalError("FieldEncoder encodes flat keyed values only") }
    func singleValueContainer() -> SingleValueEncodingContainer { fatalError("FieldEncoder encodes flat keyed values only") }

    struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let storage: Storage
        var codingPath: [CodingKey] = []
        func unsupported(_ key: Key) -> EncodingError {
            EncodingError.invalidValue(key.stringValue, .init(codingPath: [key], debugDescription: "FieldEncoder: unsupported type"))
        }
        mutating func encodeNil(forKey key: Key) throws {}
        mutating func encode(_ v: Bool, forKey key: Key) throws { storage.fields.append((key.stringValue, .string(v ? "on" : "off"))) }
        mutating func encode(_ v: String, forKey key: Key) throws { storage.fields.append((key.stringValue, .string(v))) }
        mutating func encode(_ v: Double, forKey key: Key) throws { storage.fields.append((key.stringValue, .exact(v))) }
        mutating func encode(_ v: Int, forKey key: Key) throws { storage.fields.append((key.stringValue, .int(v))) }
        mutating func encode(_ v: Float, forKey key: Key) throws { throw unsupported(key) }
        mutating func encode(_ v: Int8, forKey key: Key) throws { throw unsupported(key) }
        mutating func encode(_ v: Int16, forKey key: Key) throws { throw unsupported(key) }
        mutating func encode(_ v: Int32, forKey key: Key) throws { throw unsupported(key) }
        mutating func encode(_ v: Int64, forKey key: Key) throws { throw unsupported(key) }
        mutating func encode(_ v: UInt, forKey key: Key) throws { throw unsupported(key) }
        mutating func encode(_ v: UInt8, forKey key: Key) throws { throw unsupported(key) }
        mutating func encode(_ v: UInt16, forKey key: Key) throws { throw unsupported(key) }
        mutating func encode(_ v: UInt32, forKey key: Key) throws { throw unsupported(key) }
        mutating func encode(_ v: UInt64, forKey key: Key) throws { throw unsupported(key) }
        mutating func encode<V: Encodable>(_ v: V, forKey key: Key) throws { throw unsupported(key) }
        mutating func nestedContainer<N: CodingKey>(keyedBy _: N.Type, forKey key: Key) -> KeyedEncodingContainer<N> {
            fatalError("FieldEncoder encodes flat keyed values only")
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> UnkeyedEncodingContainer { fatalError("FieldEncoder encodes flat keyed values only") }
        mutating func superEncoder() -> Encoder { fatalError("FieldEncoder encodes flat keyed values only") }
        mutating func superEncoder(forKey key: Key) -> Encoder { fatalError("FieldEncoder encodes flat keyed values only") }
    }
}
