import Foundation

/// One setting's name in the configuration's flat encoding: the `config` record's field, the
/// checkpoint's `bntrain.config` JSON key, and (with `-` for `_`) the flag that sets it.
public struct ConfigKey: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    /// False for settings that may change between invocations of one run (how long, where the
    /// data is, threads, kernels, observation): `--resume` applies them instead of keeping the
    /// checkpoint's.
    public let restoredOnResume: Bool
    let flagName: String?
    public init(_ name: String, restoredOnResume: Bool = true, flag: String? = nil) {
        self.name = name
        self.restoredOnResume = restoredOnResume
        flagName = flag
    }
    /// The command-line flag that sets this key.
    public var flag: String { flagName ?? "--" + name.replacingOccurrences(of: "_", with: "-") }
    public var description: String { name }
}

/// A value out of range or not applicable, found in flags or in a checkpoint by the same rule.
public struct ConfigProblem: Error, Equatable, CustomStringConvertible {
    public let key: ConfigKey
    /// What is wrong and how to fix it, to follow the key's flag or name.
    public let message: String
    public init(_ key: ConfigKey, _ message: String) {
        self.key = key
        self.message = message
    }
    public var description: String { "\(key.flag) \(message)" }
}

/// A configuration group: a typed part of `RunConfig` that writes its settings as flat keys,
/// reads them back through `FlatReader` (the one decoding mechanism) and checks its ranges.
public protocol ConfigGroup: Equatable, Sendable {
    init()
    /// Writes the settings that apply (an optimizer's parameters only for that optimizer).
    func write(to w: inout FlatWriter)
    /// Reads the settings; a missing key keeps its default (older checkpoints).
    init(from r: FlatReader) throws
    /// The first value out of range, or nil.
    func problem() -> ConfigProblem?
}

/// The flat encoding being written: ordered (key, value) fields.
public struct FlatWriter {
    public private(set) var fields: [(String, Value)] = []
    public init() {}
    public mutating func write(_ key: ConfigKey, _ v: Int) { fields.append((key.name, .int(v))) }
    public mutating func write(_ key: ConfigKey, _ v: Double) { fields.append((key.name, .exact(v))) }
    public mutating func write(_ key: ConfigKey, _ v: String) { fields.append((key.name, .string(v))) }
    /// bntrain 0.3's spelling of a switch.
    public mutating func write(_ key: ConfigKey, onOff v: Bool) { write(key, v ? "on" : "off") }
    public mutating func write<E: RawRepresentable>(_ key: ConfigKey, _ v: E) where E.RawValue == String { write(key, v.rawValue) }
}

/// Reads flat keys from a decoder. Every value is checked for its type and spelling here; a
/// wrong one is a `DecodingError.dataCorrupted` naming the key.
public struct FlatReader {
    struct Key: CodingKey {
        let stringValue: String
        init(_ s: String) { stringValue = s }
        init?(stringValue s: String) { stringValue = s }
        var intValue: Int? { nil }
        init?(intValue _: Int) { nil }
    }
    let container: KeyedDecodingContainer<Key>

    init(_ decoder: Decoder) throws { container = try decoder.container(keyedBy: Key.self) }

    func bad(_ key: ConfigKey, _ why: String) -> DecodingError {
        .dataCorruptedError(forKey: Key(key.name), in: container, debugDescription: why)
    }
    public func contains(_ key: ConfigKey) -> Bool { container.contains(Key(key.name)) }
    public func int(_ key: ConfigKey) throws -> Int? { try container.decodeIfPresent(Int.self, forKey: Key(key.name)) }
    public func double(_ key: ConfigKey) throws -> Double? { try container.decodeIfPresent(Double.self, forKey: Key(key.name)) }
    public func string(_ key: ConfigKey) throws -> String? { try container.decodeIfPresent(String.self, forKey: Key(key.name)) }
    public func onOff(_ key: ConfigKey) throws -> Bool? {
        guard let s = try string(key) else { return nil }
        guard s == "on" || s == "off" else { throw bad(key, "is '\(s)', expected on or off") }
        return s == "on"
    }
    public func choice<E: RawRepresentable & CaseIterable>(_ key: ConfigKey, _: E.Type = E.self) throws -> E? where E.RawValue == String {
        guard let s = try string(key) else { return nil }
        guard let v = E(rawValue: s) else { throw bad(key, "is '\(s)', expected \(E.allCases.map(\.rawValue).spokenList)") }
        return v
    }
    public func uint64(_ key: ConfigKey) throws -> UInt64? {
        guard let s = try string(key) else { return nil }
        guard let v = UInt64(s) else { throw bad(key, "is '\(s)', expected an unsigned 64-bit integer") }
        return v
    }
    /// A count, or the string "all" for none (bntrain 0.3's spelling).
    public func countOrAll(_ key: ConfigKey) throws -> Int? {
        if let s = try? string(key) {
            guard s == "all" else { throw bad(key, "is '\(s)', expected a count or \"all\"") }
            return nil
        }
        return try int(key)
    }
}

extension Array where Element == String {
    /// "a", "a or b", "a, b or c".
    var spokenList: String { count <= 1 ? joined() : dropLast().joined(separator: ", ") + " or " + last! }
}
