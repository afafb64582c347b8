import Foundation
import XCTest

/// The LLaMa loss sequence of a fixed 20-step run (Fixtures/llama-tiny-1f1b-1-2bp-losses.json) must
/// come out bit for bit the same: a change that should not alter the numbers (a refactoring, a new
/// family) is caught here. A change that alters them on purpose re-records the file and says so in
/// its `recorded_with`.
///
/// Bit-identical results hold only for one BLAS kernel (others block the GEMMs differently), so
/// the run uses OpenBLAS's generic kernel, Prescott, which every x86-64 CPU has, as the recording did.
final class LossFixtureTests: XCTestCase {
    struct Fixture: Decodable {
        let arguments: [String]
        let data: String
        let losses: [Double]
    }

    func testTwentyStepLossSequenceIsBitIdenticalToTheRecording() throws {
        let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        let fixture = try JSONDecoder().decode(
            Fixture.self, from: Data(contentsOf: tests.appendingPathComponent("Fixtures/llama-tiny-1f1b-1-2bp-losses.json")))
        let repository = tests.deletingLastPathComponent().deletingLastPathComponent()
        let data = repository.appendingPathComponent(fixture.data).standardizedFileURL
        XCTAssertTrue(FileManager.default.fileExists(atPath: data.path), "the recorded run's corpus \(data.path) is missing")
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-fixture-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        let metrics = folder.appendingPathComponent("metrics.jsonl")

        let process = Process()
        process.executableURL = try XCTUnwrap(MPIJob.findProduct("twobp"), "twobp not built")
        process.arguments = fixture.arguments + ["--data", data.path, "--metrics", metrics.path]
        process.environment = ProcessInfo.processInfo.environment.merging(["OPENBLAS_CORETYPE": "Prescott"]) { $1 }
        process.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, message)

        struct Record: Decodable { let loss: Double }
        // JSONDecoder, not JSONSerialization: the latter's number parsing is off by an ulp at times.
        let losses = try String(contentsOf: metrics, encoding: .utf8).split(separator: "\n").map { line in
            try JSONDecoder().decode(Record.self, from: Data(line.utf8)).loss
        }
        XCTAssertEqual(losses.count, fixture.losses.count)
        for (step, (loss, recorded)) in zip(losses, fixture.losses).enumerated() {
            XCTAssertEqual(loss.bitPattern, recorded.bitPattern, "step \(step + 1): \(loss) vs recorded \(recorded)")
        }
    }
}
