import Foundation
import Layers
import Models
import Tensor
@testable import Data
import XCTest

final class SentencePairCorpusTests: XCTestCase {
    /// 400 numbered lines of varying length, so segments can be located in the text.
    let lines: [String] = (0..<400).map { "line \($0) " + String(repeating: "x", count: $0 % 23) + "\n" }
    var text: [UInt8] { Array(lines.joined().utf8) }

    func testPairsAreClsASepBSepWithTypesPaddingAndLabels() throws {
        let corpus = try SentencePairCorpus(bytes: text, sequenceLength: 48)
        XCTAssertEqual(corpus.trainingLines, 0..<380)
        XCTAssertEqual(corpus.validationLines, 380..<400)
        let joined = lines.joined()
        var consecutive = 0
        let batch = corpus.trainingPairs(step: 3, batchSize: 64, seed: 7)
        for b in 0..<batch.batchSize {
            let row = b * 48
            let length = batch.attentionMask[row..<(row + 48)].reduce(0) { $0 + Int($1) }
            let tokens = Array(batch.tokens[row..<(row + length)])
            let labels = Array(batch.maskedLMLabels[row..<(row + 48)])
            // Unmask to read the original text back.
            let original = tokens.indices.map { labels[$0] == PreTrainingBatch.ignoreIndex ? tokens[$0] : labels[$0] }
            XCTAssertEqual(original.first, BertVocabulary.cls)
            XCTAssertEqual(original.last, BertVocabulary.sep)
            let separators = original.indices.filter { original[$0] == BertVocabulary.sep }
            XCTAssertEqual(separators.count, 2, "two [SEP]s")
            XCTAssertTrue(batch.tokens[(row + length)..<(row + 48)].allSatisfy { $0 == BertVocabulary.pad }, "padding after the pair")
            XCTAssertTrue(batch.attentionMask[row..<(row + length)].allSatisfy { $0 == 1 })
            let types = Array(batch.tokenTypes[row..<(row + 48)])
            XCTAssertEqual(types, (0..<48).map { $0 > separators[0] && $0 < length ? 1 : 0 }, "types 0 for [CLS] A [SEP] and padding, 1 for B [SEP]")
            // Labels only on bytes, never on special tokens or padding.
            for (position, label) in labels.enumerated() where label != PreTrainingBatch.ignoreIndex {
                XCTAssertTrue(position < length && !separators.contains(position) && position != 0)
                XCTAssertLessThan(label, 256)
            }
            let first = String(decoding: original[1..<separators[0]].map { UInt8($0) }, as: UTF8.self)
            let second = String(decoding: original[(separators[0] + 1)..<separators[1]].map { UInt8($0) }, as: UTF8.self)
            XCTAssertTrue(joined.contains(first) && joined.contains(second))
            XCTAssertLessThanOrEqual(first.utf8.count, 45 / 2, "A fills at most half the window")
            // B's first line is the line after the one A ends in (A may be cut inside its only line).
            let aEnd = joined.range(of: "\n" + first).map { $0.upperBound } ?? joined.range(of: first)!.upperBound
            let nextLine = first.hasSuffix("\n") ? aEnd : joined[aEnd...].firstIndex(of: "\n").map { joined.index(after: $0) } ?? joined.endIndex
            if batch.nextSentenceLabels[b] == 0 {
                XCTAssertTrue(joined[nextLine...].hasPrefix(second), "label 0: B follows A in the text")
                consecutive += 1
            } else {
                XCTAssertFalse(joined[nextLine...].hasPrefix(second), "label 1: B comes from elsewhere")
            }
        }
        XCTAssertEqual(Double(consecutive), 32, accuracy: 12, "about half the pairs are consecutive")
        XCTAssertEqual(batch.nextSentenceLossWeight, 1 / 64)
        XCTAssertEqual(batch.maskedLMLossWeight, 1 / Float(batch.predictedCount))
        XCTAssertEqual(batch.dropout, DropoutContext(seed: 7, step: 3, firstSample: 0))
    }

    /// 15% of byte positions are predicted; of those 80% become [MASK], 10% a random byte, 10% stay.
    func testMaskingRates() throws {
        let corpus = try SentencePairCorpus(bytes: text, sequenceLength: 64)
        var (bytes, predicted, masked, kept) = (0, 0, 0, 0)
        for step in 0..<20 {
            let batch = corpus.trainingPairs(step: step, batchSize: 32, seed: 1)
            for (position, label) in batch.maskedLMLabels.enumerated() {
                let token = batch.tokens[position]
                if label == PreTrainingBatch.ignoreIndex {
                    if token < 256 { bytes += 1 }
                    continue
                }
                bytes += 1
                predicted += 1
                if token == BertVocabulary.mask { masked += 1 } else if token == label { kept += 1 }
            }
        }
        XCTAssertEqual(Double(predicted) / Double(bytes), 0.15, accuracy: 0.015)
        XCTAssertEqual(Double(masked) / Double(predicted), 0.8, accuracy: 0.03)
        // An unchanged byte is the 10% kept plus the random draws that hit the same byte (1/256 of 10%).
        XCTAssertEqual(Double(kept) / Double(predicted), 0.1, accuracy: 0.03)
    }

    func testBatchesArePureFunctionsOfSeedAndStepAndValidationIsFixed() throws {
        let corpus = try SentencePairCorpus(bytes: text, sequenceLength: 32)
        let late = corpus.trainingPairs(step: 9, batchSize: 4, seed: 42)
        XCTAssertEqual(try SentencePairCorpus(bytes: text, sequenceLength: 32).trainingPairs(step: 9, batchSize: 4, seed: 42), late)
        XCTAssertNotEqual(corpus.trainingPairs(step: 10, batchSize: 4, seed: 42).tokens, late.tokens)
        XCTAssertNotEqual(corpus.trainingPairs(step: 9, batchSize: 4, seed: 43).tokens, late.tokens)
        let validation = try corpus.validationPairs(batchSize: 2)
        XCTAssertEqual(validation.count, 2, "20 held-out lines, one pair every 4, in batches of 2")
        XCTAssertEqual(try corpus.validationPairs(batchSize: 2), validation)
        XCTAssertEqual(try corpus.validationPairs(batchSize: 2, limit: 1), Array(validation.prefix(1)))
        let heldOut = Set(lines[380...].map { $0 })
        for batch in validation {
            // A starts every 4th held-out line and B stays in the held-out part.
            for b in 0..<2 {
                let row = Array(batch.tokens[(b * 32)..<((b + 1) * 32)])
                let labels = Array(batch.maskedLMLabels[(b * 32)..<((b + 1) * 32)])
                let original = row.indices.map { labels[$0] == PreTrainingBatch.ignoreIndex ? row[$0] : labels[$0] }
                let text = String(decoding: original.filter { $0 < 256 }.map { UInt8($0) }, as: UTF8.self)
                XCTAssertTrue(heldOut.contains { text.hasPrefix(String($0.prefix(5))) })
            }
        }
        XCTAssertEqual(corpus.fingerprint, try TextCorpus(bytes: text, sequenceLength: 4).fingerprint)
    }

    func testShortTextsAndWindowsAreRefused() {
        XCTAssertThrowsError(try SentencePairCorpus(bytes: text, sequenceLength: 4)) { error in
            XCTAssertEqual("\(error)", "sequence length must be at least 5 for [CLS] A [SEP] B [SEP], not 4")
        }
        XCTAssertThrowsError(try SentencePairCorpus(bytes: Array("one\ntwo\n".utf8), sequenceLength: 16)) { error in
            XCTAssertEqual("\(error)", "text has 2 lines, too few for sentence pairs: the training part needs 2 and the held-out 5% 4")
        }
        XCTAssertThrowsError(try SentencePairCorpus(bytes: text, sequenceLength: 16).validationPairs(batchSize: 6)) { error in
            XCTAssertEqual("\(error)", "the held-out part of text holds 5 sentence pairs, fewer than one batch of 6")
        }
    }
}
