import Foundation
import Tensor
@testable import Training
import XCTest
@testable import Data

final class ByteTokenizerTests: XCTestCase {
    func testRoundTripAndLossyDecode() {
        let text = "To be, or not to be — ça va?\n"
        let tokens = ByteTokenizer.encode(text)
        XCTAssertEqual(tokens.count, text.utf8.count)
        XCTAssertEqual(Array(tokens.prefix(3)), [84, 111, 32])
        XCTAssertEqual(ByteTokenizer.decode(tokens), text)
        XCTAssertEqual(ByteTokenizer.decode([72, 0xC3, 105]), "H\u{FFFD}i", "a torn UTF-8 sequence decodes lossily")
        XCTAssertEqual(ByteTokenizer.decode([72, 300, -1]), "H\u{FFFD}\u{FFFD}")
        XCTAssertEqual(ByteTokenizer.vocabularySize, 256)
    }
}

final class TextCorpusTests: XCTestCase {
    /// 2000 bytes whose value encodes their offset, so windows can be located.
    let text: [UInt8] = (0..<2000).map { UInt8($0 % 251) }

    func testSplitHoldsOutTheLastFivePercent() throws {
        let corpus = try TextCorpus(bytes: text, sequenceLength: 16)
        XCTAssertEqual(corpus.trainingRange, 0..<1900)
        XCTAssertEqual(corpus.validationRange, 1900..<2000)
        let odd = try TextCorpus(bytes: Array(text.prefix(1999)), sequenceLength: 16)
        XCTAssertEqual(odd.validationRange, 1900..<1999, "5% of 1999 rounds down to 99 held-out bytes")
    }

    func testTrainingBatchIsAPureFunctionOfSeedAndStep() throws {
        let corpus = try TextCorpus(bytes: text, sequenceLength: 16)
        let late = corpus.trainingTokens(step: 7, batchSize: 4, seed: 42)
        for step in 0..<7 { _ = corpus.trainingTokens(step: step, batchSize: 4, seed: 42) }
        let again = try TextCorpus(bytes: text, sequenceLength: 16).trainingTokens(step: 7, batchSize: 4, seed: 42)
        XCTAssertEqual(again.tokens, late.tokens, "same (seed, step) gives the same batch, whatever came before")
        XCTAssertEqual(again.targets, late.targets)
        XCTAssertNotEqual(corpus.trainingTokens(step: 8, batchSize: 4, seed: 42).tokens, late.tokens)
        XCTAssertNotEqual(corpus.trainingTokens(step: 7, batchSize: 4, seed: 43).tokens, late.tokens)
        // Fixed values (computed independently in Python from the documented SplitMix64
        // mixing): changing the sampling function would break resuming saved runs.
        XCTAssertEqual(corpus.trainingWindowStarts(step: 0, batchSize: 3, seed: 1), [507, 1230, 1089])
        XCTAssertEqual(corpus.trainingWindowStarts(step: 7, batchSize: 4, seed: 42), [286, 119, 664, 1427])
        XCTAssertEqual(Set((0..<50).flatMap { corpus.trainingWindowStarts(step: $0, batchSize: 4, seed: 9) }).count, 200, accuracy: 20)
    }

    func testTrainingWindowsStayInTheTrainingPartAndTargetsShiftByOne() throws {
        let corpus = try TextCorpus(bytes: text, sequenceLength: 16)
        var maxStart = 0
        for step in 0..<300 {
            let starts = corpus.trainingWindowStarts(step: step, batchSize: 8, seed: 5)
            maxStart = max(maxStart, starts.max()!)
            XCTAssertTrue(starts.allSatisfy { $0 >= 0 && $0 + 17 <= 1900 }, "window outside the training part at step \(step)")
        }
        XCTAssertGreaterThan(maxStart, 1800, "windows reach the end of the training part")
        let batch = corpus.trainingTokens(step: 3, batchSize: 2, seed: 5)
        let starts = corpus.trainingWindowStarts(step: 3, batchSize: 2, seed: 5)
        XCTAssertEqual(batch.batchSize, 2)
        XCTAssertEqual(batch.sequenceLength, 16)
        XCTAssertEqual(batch.lossWeight, 1.0 / 32)
        for row in 0..<2 {
            XCTAssertEqual(Array(batch.tokens[(row * 16)..<(row * 16 + 16)]), (0..<16).map { Int32(text[starts[row] + $0]) })
            XCTAssertEqual(Array(batch.targets[(row * 16)..<(row * 16 + 16)]), (1...16).map { Int32(text[starts[row] + $0]) })
        }
    }

    func testValidationBatchesAreSequentialFixedAndInTheTail() throws {
        let corpus = try TextCorpus(bytes: text, sequenceLength: 16)
        XCTAssertEqual(corpus.validationWindowCount, 6, "(100 − 1) / 16 windows of 17 bytes")
        let batches = try corpus.validationTokens(batchSize: 2)
        XCTAssertEqual(batches.count, 3)
        XCTAssertEqual(batches.map(\.tokens), try corpus.validationTokens(batchSize: 2).map(\.tokens))
        for (b, batch) in batches.enumerated() {
            for row in 0..<2 {
                let start = 1900 + (b * 2 + row) * 16
                XCTAssertEqual(Array(batch.tokens[(row * 16)..<(row * 16 + 16)]), (0..<16).map { Int32(text[start + $0]) })
                XCTAssertEqual(batch.targets[row * 16 + 15], Int32(text[start + 16]))
            }
        }
        XCTAssertEqual(try corpus.validationTokens(batchSize: 4).count, 1, "the partial batch is dropped")
        XCTAssertEqual(try corpus.validationTokens(batchSize: 1, limit: 2).count, 2)
        assertTwoBPError("holds 6 windows of 17 bytes, fewer than one batch of 7") { try corpus.validationTokens(batchSize: 7) }
    }

    func testFileErrors() throws {
        let folder = try temporaryFolder(self)
        assertTwoBPError("data file", "missing.txt not found", "setup-data.sh") {
            try TextCorpus(contentsOf: folder.appendingPathComponent("missing.txt"), sequenceLength: 8)
        }
        assertTwoBPError("is a folder") { try TextCorpus(contentsOf: folder, sequenceLength: 8) }
        let empty = folder.appendingPathComponent("empty.txt")
        try Data().write(to: empty)
        assertTwoBPError("empty.txt is empty") { try TextCorpus(contentsOf: empty, sequenceLength: 8) }
        let short = folder.appendingPathComponent("short.txt")
        try Data(text.prefix(300)).write(to: short)
        assertTwoBPError("short.txt has 300 bytes, too short for sequence length 64", "at least 1300 bytes") {
            try TextCorpus(contentsOf: short, sequenceLength: 64)
        }
        let corpus = try TextCorpus(contentsOf: short, sequenceLength: 8)
        XCTAssertEqual(corpus.validationRange, 285..<300)
        XCTAssertTrue(corpus.fingerprint.hasPrefix("300-"))
        XCTAssertNotEqual(corpus.fingerprint, try TextCorpus(bytes: Array(text.prefix(300).reversed()), sequenceLength: 8).fingerprint)
        assertTwoBPError("sequence length must be >= 1") { try TextCorpus(contentsOf: short, sequenceLength: 0) }
    }

    func testShakespeareCorpusLoads() throws {
        // The set-up script's copy of the default corpus, else the shared one beside the checkout.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let candidates = ["data/shakespeare.txt", "../shared/data/shakespeare.txt"].map { root.appendingPathComponent($0) }
        let url = try XCTUnwrap(candidates.first { FileManager.default.fileExists(atPath: $0.path) },
                                "no shakespeare.txt: run scripts/setup-data.sh")
        let corpus = try TextCorpus(contentsOf: url, sequenceLength: 256)
        XCTAssertGreaterThan(corpus.bytes.count, 1_000_000)
        let batch = corpus.trainingTokens(step: 0, batchSize: 2, seed: 1)
        XCTAssertTrue(batch.tokens.allSatisfy { $0 >= 0 && $0 < 128 }, "plain ASCII text")
    }
}

private func XCTAssertEqual(_ a: Int, _ b: Int, accuracy: Int, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertLessThanOrEqual(abs(a - b), accuracy, "\(a) is not within \(accuracy) of \(b)", file: file, line: line)
}
