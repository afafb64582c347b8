import Foundation
import Models
import Tensor
@testable import Training
import XCTest
@testable import Checkpoints

final class EvalTests: XCTestCase {
    /// Bytes that look like text, deterministic.
    func sampleText(count: Int, seed: UInt64 = 1) -> [UInt8] {
        let alphabet = Array("abcdefgh ijklmnop,\nqrstuvwxyz. THE".utf8)
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
    }

    /// Mean over windows of −log softmax(logits)[next byte], the log-softmax in Double, one window
    /// (one `logits` call) at a time, windows cut by hand.
    func referenceLoss(_ model: CausalLanguageModel, bytes: [UInt8], sequenceLength: Int, windows: Int) throws -> Double {
        var total = 0.0
        let vocabulary = model.vocabularySize
        for w in 0..<windows {
            let start = w * (sequenceLength + 1)
            let input = bytes[start..<(start + sequenceLength)].map { Int32($0) }
            let logits = try model.logits(tokens: input, batchSize: 1, sequenceLength: sequenceLength).toArray()
            for t in 0..<sequenceLength {
                let row = logits[(t * vocabulary)..<((t + 1) * vocabulary)].map(Double.init)
                let maximum = row.max()!
                let logSumExp = maximum + log(row.reduce(0) { $0 + exp($1 - maximum) })
                total += logSumExp - row[Int(bytes[start + t + 1])]
            }
        }
        return total / Double(windows * sequenceLength)
    }

    func testLossOfALoadedCheckpointEqualsAnIndependentLogSoftmax() throws {
        let folder = try temporaryFolder(self).appendingPathComponent("model")
        try writeInferenceFolder(try LlamaModel(config: inferenceTestConfig(), seed: 21), to: folder)
        let model = try XCTUnwrap(ModelLoading.load(from: folder).model as? LlamaChunk)
        let bytes = sampleText(count: 7 * 17 + 5)

        let result = try Evaluation.evaluate(model: model, bytes: bytes, sequenceLength: 16, batchSize: 3)
        XCTAssertEqual(result.windows, 7)
        XCTAssertEqual(result.tokens, 7 * 16)
        XCTAssertEqual(result.sequenceLength, 16)
        let expected = try referenceLoss(model, bytes: bytes, sequenceLength: 16, windows: 7)
        XCTAssertEqual(result.loss, expected, accuracy: 1e-6 * expected)
        // A random model of the byte vocabulary is near ln 256 but not at it.
        XCTAssertGreaterThan(result.loss, 3)
        XCTAssertNotEqual(result.loss, log(256), accuracy: 1e-3)
        XCTAssertEqual(result.bitsPerByte, result.loss / log(2), accuracy: 1e-12)

        // The batch size changes only the grouping.
        for batchSize in [1, 2, 7, 50] {
            let other = try Evaluation.evaluate(model: model, bytes: bytes, sequenceLength: 16, batchSize: batchSize)
            XCTAssertEqual(other.loss, expected, accuracy: 1e-6 * expected, "batch size \(batchSize)")
        }
        // Shorter windows are cut afresh from the start: 124 bytes hold 15 windows of 8.
        let short = try Evaluation.evaluate(model: model, bytes: bytes, sequenceLength: 7, maxWindows: 100)
        XCTAssertEqual(short.windows, 15)
        XCTAssertEqual(short.loss, try referenceLoss(model, bytes: bytes, sequenceLength: 7, windows: 15), accuracy: 1e-6 * short.loss)
    }

    func testWindowingBoundaries() throws {
        let model = try LlamaModel(config: inferenceTestConfig(), seed: 2)
        let length = 10
        // Exactly 4 windows of 11 bytes, then 4 windows and a partial one that is dropped.
        XCTAssertEqual(Evaluation.windowCount(byteCount: 44, sequenceLength: length), 4)
        XCTAssertEqual(Evaluation.windowCount(byteCount: 54, sequenceLength: length), 4)
        XCTAssertEqual(Evaluation.windowCount(byteCount: 55, sequenceLength: length), 5)
        XCTAssertEqual(Evaluation.windowCount(byteCount: 10, sequenceLength: length), 0)

        let bytes = sampleText(count: 54)
        XCTAssertEqual(Array(Evaluation.window(0, of: bytes, sequenceLength: length)), Array(bytes[0..<11]))
        XCTAssertEqual(Array(Evaluation.window(3, of: bytes, sequenceLength: length)), Array(bytes[33..<44]))

        let all = try Evaluation.evaluate(model: model, bytes: bytes, sequenceLength: length)
        XCTAssertEqual(all.windows, 4)
        XCTAssertEqual(all.tokens, 40)
        // The dropped partial window's bytes play no part: changing them leaves the loss alone,
        // changing a byte of the last whole window does not.
        var changedTail = bytes
        for i in 44..<54 { changedTail[i] = UInt8(ascii: "#") }
        XCTAssertEqual(try Evaluation.evaluate(model: model, bytes: changedTail, sequenceLength: length).loss, all.loss)
        var changedLast = bytes
        changedLast[43] = UInt8(ascii: "#")
        XCTAssertNotEqual(try Evaluation.evaluate(model: model, bytes: changedLast, sequenceLength: length).loss, all.loss)
        // The first byte of a window is never predicted, only read.
        var changedFirst = bytes
        changedFirst[11] = UInt8(ascii: "#")
        let firstChanged = try Evaluation.evaluate(model: model, bytes: changedFirst, sequenceLength: length, maxWindows: 1)
        XCTAssertEqual(firstChanged.loss, try Evaluation.evaluate(model: model, bytes: bytes, sequenceLength: length, maxWindows: 1).loss)

        // The first K windows.
        let two = try Evaluation.evaluate(model: model, bytes: bytes, sequenceLength: length, maxWindows: 2)
        XCTAssertEqual(two.windows, 2)
        XCTAssertEqual(two.tokens, 20)
        XCTAssertEqual(two.loss, try referenceLoss(model, bytes: bytes, sequenceLength: length, windows: 2), accuracy: 1e-6 * two.loss)
        // Exactly one window fits in 11 bytes.
        let one = try Evaluation.evaluate(model: model, bytes: Array(bytes.prefix(11)), sequenceLength: length)
        XCTAssertEqual(one.windows, 1)
        XCTAssertEqual(one.loss, try referenceLoss(model, bytes: bytes, sequenceLength: length, windows: 1), accuracy: 1e-6 * one.loss)
    }

    func testJSONReport() throws {
        let url = try temporaryFolder(self).appendingPathComponent("eval.json")
        let result = EvaluationResult(loss: 1.25, windows: 3, tokens: 48, sequenceLength: 16)
        try result.writeJSON(to: url)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        XCTAssertEqual(Set(object.keys), ["loss", "windows", "tokens", "sequence_length"])
        XCTAssertEqual(object["loss"] as? Double, 1.25)
        XCTAssertEqual(object["windows"] as? Int, 3)
        XCTAssertEqual(object["tokens"] as? Int, 48)
        XCTAssertEqual(object["sequence_length"] as? Int, 16)
    }

    func testEvaluationErrorsAreClear() throws {
        let model = try LlamaModel(config: inferenceTestConfig(maxPositions: 16), seed: 2)
        let bytes = sampleText(count: 100)
        assertTwoBPError("shorter than one window", "17 bytes", "16 bytes") {
            try Evaluation.evaluate(model: model, bytes: Array(bytes.prefix(16)), sequenceLength: 16, source: "data file x.txt")
        }
        assertTwoBPError("x.txt has 0 bytes") { try Evaluation.evaluate(model: model, bytes: [], sequenceLength: 4, source: "x.txt") }
        assertTwoBPError("sequence length 17 exceeds", "context of 16 tokens") {
            try Evaluation.evaluate(model: model, bytes: bytes, sequenceLength: 17)
        }
        assertTwoBPError("sequence length must be at least 1") { try Evaluation.evaluate(model: model, bytes: bytes, sequenceLength: 0) }
        assertTwoBPError("windows must be at least 1, got 0") {
            try Evaluation.evaluate(model: model, bytes: bytes, sequenceLength: 8, maxWindows: 0)
        }
        assertTwoBPError("batch size must be at least 1") {
            try Evaluation.evaluate(model: model, bytes: bytes, sequenceLength: 8, batchSize: 0)
        }
        let missing = try temporaryFolder(self).appendingPathComponent("no-such.txt")
        assertTwoBPError("data file", "no-such.txt", "not found") { try Evaluation.readData(missing) }
    }
}
