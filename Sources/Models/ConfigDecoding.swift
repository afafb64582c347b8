import Foundation
import Tensor

/// Helpers the families' `config.json` coders share: integers that must be integers, and one
/// encoding (sorted keys) so a config always writes the same file.
public enum ConfigDecoding {
    /// The JSON number at `key` as an integer (64 and 64.0 are, 64.5 and "64" are not); nil when absent.
    public static func integer<Key: CodingKey>(_ container: KeyedDecodingContainer<Key>, _ key: Key) throws -> Int? {
        guard container.contains(key), try !container.decodeNil(forKey: key) else { return nil }
        guard let value = try? container.decode(Double.self, forKey: key), value.rounded() == value, abs(value) < 0x1p53 else {
            throw TwoBPError("field '\(key.stringValue)' must be an integer")
        }
        return Int(value)
    }

    /// `integer`, required.
    public static func required<Key: CodingKey>(_ container: KeyedDecodingContainer<Key>, _ key: Key) throws -> Int {
        guard let value = try integer(container, key) else { throw TwoBPError("missing field '\(key.stringValue)'") }
        return value
    }

    /// `config.json` bytes: pretty-printed with sorted keys, so the same config always writes the same file.
    public static func encode<T: Encodable>(_ value: T) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(value)
    }
}
