/// The token ids of TwoBP's BERT pre-training: the 256 bytes as themselves, then the four
/// special tokens BERT needs. A model that reads them has `vocab_size` ≥ 260 and
/// `pad_token_id` = 256 (the named `bert-tiny` and `bert-small` configurations do).
///
///     0 ... 255   the UTF-8 bytes of the text
///     256 [PAD]   fills a pair shorter than the window (attention mask 0, token type 0)
///     257 [CLS]   first token; the next-sentence head reads its final hidden state
///     258 [SEP]   ends each of the two segments
///     259 [MASK]  replaces 80% of the positions selected for masked-LM prediction
public enum BertVocabulary {
    public static let byteCount = 256
    public static let pad: Int32 = 256
    public static let cls: Int32 = 257
    public static let sep: Int32 = 258
    public static let mask: Int32 = 259
    /// Bytes plus the four special tokens.
    public static let size = 260
}
