/// The byte-level tokenizer: each UTF-8 byte is one token, vocabulary 256.
///
/// Lossless for encoding; decoding is lossy only where the model produced a byte
/// sequence that is not valid UTF-8 (shown as U+FFFD).
public enum ByteTokenizer {
    public static let vocabularySize = 256

    public static func encode(_ text: String) -> [Int32] {
        text.utf8.map { Int32($0) }
    }

    /// Text for `tokens`; invalid UTF-8 and ids outside 0..<256 become U+FFFD.
    public static func decode<Tokens: Sequence>(_ tokens: Tokens) -> String where Tokens.Element == Int32 {
        var bytes: [UInt8] = []
        for token in tokens {
            if (0..<Int32(vocabularySize)).contains(token) {
                bytes.append(UInt8(token))
            } else {
                bytes.append(contentsOf: [0xEF, 0xBF, 0xBD])
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
