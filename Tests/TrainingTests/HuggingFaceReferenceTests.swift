import Foundation
import Models
import Tensor
import Training
import XCTest
import Checkpoints

/// A checkpoint's weights, read by their Hugging Face names by an independent numpy
/// implementation of LlamaForCausalLM (scripts/hf_llama_reference.py), give TwoBP's logits.
final class HuggingFaceReferenceTests: XCTestCase {
    func testNumpyLlamaForCausalLMReproducesTheLogitsOfASavedModel() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-hf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        var config = try LlamaConfig.resolve("llama-tiny")
        config.numKeyValueHeads = 2
        let model = try LlamaModel(config: config, seed: 21)
        // Weights further from initialisation, so that every layer matters in the logits.
        var generator = SeededGenerator(seed: 5)
        for parameter in model.parameters where parameter.value.shape.count == 2 {
            parameter.value.fillNormal(std: 0.08, using: &generator)
        }
        try SafeTensors.write(model.parameters.map { (name: $0.name, tensor: $0.value) }, to: folder.appendingPathComponent("model.safetensors"))
        try config.jsonData().write(to: folder.appendingPathComponent("config.json"))

        let (batch, length) = (2, 24)
        let tokens = (0..<(batch * length)).map { _ in Int32(generator.next() % 256) }
        let tokensFile = folder.appendingPathComponent("tokens.json")
        try JSONSerialization.data(withJSONObject: (0..<batch).map { Array(tokens[($0 * length)..<(($0 + 1) * length)]) })
            .write(to: tokensFile)
        let ours = try model.logits(tokens: tokens, batchSize: batch, sequenceLength: length)

        let output = folder.appendingPathComponent("logits.npy")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/hf_llama_reference.py")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path, folder.path, tokensFile.path, output.path]
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "the numpy reference failed (scripts/install-deps.sh installs numpy and safetensors):\n\(message)")

        let reference = try readFloat64NPY(output)
        XCTAssertEqual(reference.count, ours.count)
        var worst = 0.0
        var scale = 0.0
        for i in 0..<Swift.min(reference.count, ours.count) {
            worst = Swift.max(worst, abs(reference[i] - Double(ours[i])))
            scale = Swift.max(scale, abs(reference[i]))
        }
        XCTAssertGreaterThan(scale, 0.5, "logits should not be near zero")
        XCTAssertLessThan(worst / scale, 1e-4, "largest logit difference \(worst) against a largest logit of \(scale)")
    }

    /// The data of a little-endian float64 .npy file (format 1.0, C order).
    func readFloat64NPY(_ url: URL) throws -> [Double] {
        let data = try Data(contentsOf: url)
        let headerLength = Int(data[8]) | Int(data[9]) << 8
        let header = String(decoding: data[10..<(10 + headerLength)], as: UTF8.self)
        XCTAssertTrue(header.contains("'descr': '<f8'") && header.contains("'fortran_order': False"), header)
        let body = data.dropFirst(10 + headerLength)
        return body.withUnsafeBytes { raw in
            (0..<(body.count / 8)).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self) }
        }
    }
}
