import Foundation
import XCTest

/// The first SIGINT or SIGTERM finishes the step in progress, writes a checkpoint, says where and
/// exits 128 + the signal. A second signal exits at once.
final class StopSignalTests: XCTestCase {
    func startTraining(folder: URL) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = try XCTUnwrap(MPIJob.findProduct("twobp"), "twobp not built")
        process.arguments = ["train", "--model", "llama-tiny", "--stages", "2", "--schedule", "1f1b-1", "--2bp",
                             "--steps", "100000", "--batch-size", "4", "--seq-len", "32", "--eval-every", "1000000",
                             "--checkpoint", folder.appendingPathComponent("run").path,
                             "--metrics", folder.appendingPathComponent("metrics.jsonl").path]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        return (process, errors)
    }

    /// Waits until the run has logged at least one step (at most 60 s).
    func waitForFirstStep(_ folder: URL) throws {
        let metrics = folder.appendingPathComponent("metrics.jsonl")
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if let text = try? String(contentsOf: metrics, encoding: .utf8), text.contains("\n") { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        XCTFail("the run logged no step within 60 s")
    }

    func testFirstSignalSavesAndExitsSecondExitsAtOnce() throws {
        for (signal, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")] {
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-stop-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: folder) }
            let (process, errors) = try startTraining(folder: folder)
            try waitForFirstStep(folder)
            kill(process.processIdentifier, signal)
            let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            XCTAssertEqual(process.terminationStatus, 128 + signal, "\(name): \(text)")
            XCTAssertTrue(text.contains("stopped by a signal after step"), "\(name): \(text)")
            let saved = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("run").path)
                .filter { $0.hasPrefix("step-") }
            XCTAssertEqual(saved.count, 1, "\(name): one checkpoint of the step it stopped after, got \(saved)")
            guard let step = saved.first.flatMap({ Int($0.dropFirst(5)) }) else { continue }
            XCTAssertTrue(text.contains("step-\(step)"), "the message names the checkpoint: \(text)")
        }

        // Two signals: the second ends the process at once, without waiting for a step.
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-stop-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let (process, errors) = try startTraining(folder: folder)
        try waitForFirstStep(folder)
        kill(process.processIdentifier, SIGINT)
        kill(process.processIdentifier, SIGINT)
        _ = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 128 + SIGINT)
    }
}
