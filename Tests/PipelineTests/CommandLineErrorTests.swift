import Foundation
import XCTest

/// Bad input gets one clear line on stderr and a non-zero exit, never a crash or a hang.
final class CommandLineErrorTests: XCTestCase {
    struct Outcome {
        let status: Int32
        let standardError: String
    }

    func twobp(_ arguments: [String], environment: [String: String] = [:]) throws -> Outcome {
        let executable = try XCTUnwrap(MPIJob.findProduct("twobp"), "twobp not built")
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return Outcome(status: process.terminationStatus, standardError: text)
    }

    func assertOneLineError(_ arguments: [String], contains expected: String, environment: [String: String] = [:],
                            file: StaticString = #filePath, line: UInt = #line) throws {
        let outcome = try twobp(arguments, environment: environment)
        XCTAssertEqual(outcome.status, 1, "twobp \(arguments.joined(separator: " ")): \(outcome.standardError)", file: file, line: line)
        let lines = outcome.standardError.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "expected one line, got:\n\(outcome.standardError)", file: file, line: line)
        XCTAssertTrue(outcome.standardError.hasPrefix("twobp: error: "), outcome.standardError, file: file, line: line)
        XCTAssertTrue(outcome.standardError.contains(expected), "\(outcome.standardError) lacks \(expected)", file: file, line: line)
    }

    func testTrainRejectsBadInputWithOneLine() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        let empty = folder.appendingPathComponent("empty.txt")
        FileManager.default.createFile(atPath: empty.path, contents: Data())
        let text = folder.appendingPathComponent("text.txt")
        try Data(String(repeating: "Friends, Romans, countrymen, lend me your ears. ", count: 600).utf8).write(to: text)

        try assertOneLineError(["train", "--model", "llama-huge"], contains: "unknown model 'llama-huge'")
        try assertOneLineError(["train", "--data", folder.appendingPathComponent("missing.txt").path], contains: "not found")
        try assertOneLineError(["train", "--data", empty.path], contains: "is empty")
        try assertOneLineError(["train", "--data", text.path, "--seq-len", "65"], contains: "sequence length 65 exceeds max_position_embeddings 64")
        try assertOneLineError(["train", "--data", text.path, "--stages", "5"], contains: "5 pipeline stages need at least 5 blocks")
        try assertOneLineError(["train", "--data", text.path, "--schedule", "2f2b"], contains: "unknown schedule '2f2b'")
        try assertOneLineError(["train", "--data", text.path, "--resume", folder.path], contains: "holds no complete checkpoint")
        try assertOneLineError(["verify", "--stages", "2", "--schedule", "interleaved", "--micro-batches", "3"],
                               contains: "multiple of the ranks")

        // Sizes the parser rejects: non-zero exit and a message naming the option.
        for arguments in [["train", "--batch-size", "0"], ["train", "--steps", "0"], ["train", "--micro-batches", "0"], ["verify", "--stages", "0"]] {
            let outcome = try twobp(arguments)
            XCTAssertNotEqual(outcome.status, 0, arguments.joined(separator: " "))
            XCTAssertTrue(outcome.standardError.contains("must be at least 1"), outcome.standardError)
        }
    }

    func testCorruptCheckpointsAreRefusedWithOneLine() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-cli-\(UUID().uuidString)")
        let step = folder.appendingPathComponent("step-1")
        try FileManager.default.createDirectory(at: step, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        try Data(#"{"hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 4, "num_attention_heads": 4, "vocab_size": 256, "max_position_embeddings": 64}"#.utf8)
            .write(to: step.appendingPathComponent("config.json"))
        // A header length far beyond the file.
        try Data([0xFF, 0xFF, 0, 0, 0, 0, 0, 0] + Array("{}".utf8)).write(to: step.appendingPathComponent("model.safetensors"))
        try assertOneLineError(["generate", "--checkpoint", step.path, "--prompt", "To be"], contains: "model.safetensors")
        try assertOneLineError(["eval", "--checkpoint", folder.path], contains: "model.safetensors")
    }
}
