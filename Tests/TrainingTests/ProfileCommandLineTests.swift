import Foundation
import XCTest

/// The `schedule`, `plan` and `profile` commands as a user runs them: the
/// `twobp` executable built next to this test bundle, in a subprocess.
final class ProfileCommandLineTests: XCTestCase {
    struct Run {
        var status: Int32
        var standardOutput: String
        var standardError: String
    }

    static func findTwoBP() -> URL? {
        var directories = Bundle.allBundles.map(\.bundleURL).filter { $0.pathExtension == "xctest" }
            .map { $0.deletingLastPathComponent() }
        let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        directories.append(packageRoot.appendingPathComponent(".build/debug"))
        return directories.lazy.map { $0.appendingPathComponent("twobp") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    private func twobp(_ arguments: String...) throws -> Run {
        guard let executable = Self.findTwoBP() else { throw XCTSkip("twobp is not built next to the test bundle") }
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let output = Pipe(), error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try process.run()
        let outputData = output.fileHandleForReading.readDataToEndOfFile()
        let errorData = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, standardOutput: String(decoding: outputData, as: UTF8.self),
                   standardError: String(decoding: errorData, as: UTF8.self))
    }

    private func assertOneLineError(_ run: Run, contains fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(run.status, 1, run.standardError, file: file, line: line)
        XCTAssertTrue(run.standardError.hasPrefix("twobp: error: "), run.standardError, file: file, line: line)
        XCTAssertEqual(run.standardError.split(separator: "\n").count, 1, run.standardError, file: file, line: line)
        XCTAssertTrue(run.standardError.contains(fragment), "\(run.standardError) lacks \(fragment)", file: file, line: line)
    }

    func testErrorCasesAreOneLineTwoBPErrors() throws {
        assertOneLineError(try twobp("schedule", "--schedule", "nope"), contains: "unknown schedule 'nope'")
        assertOneLineError(try twobp("schedule", "--stages", "0"), contains: "--stages must be at least 1")
        assertOneLineError(try twobp("schedule", "--costs", "F=1,Q=2"), contains: "unknown cost key 'Q'")
        assertOneLineError(try twobp("schedule", "--costs", "I=1,W=1"), contains: "costs need F")
        assertOneLineError(try twobp("schedule", "--schedule", "naive", "--micro-batches", "3"), contains: "naive runs the whole batch")
        assertOneLineError(try twobp("plan", "--model", "llama-tiny", "--stages", "0"), contains: "--stages must be at least 1")
        assertOneLineError(try twobp("plan", "--model", "llama-tiny", "--memory-limit", "lots", "--flops-rate", "1e9"), contains: "'lots'")
        assertOneLineError(try twobp("profile", "--model", "nope"), contains: "nope")
        assertOneLineError(try twobp("profile", "--schedule", "auto"), contains: "unknown schedule 'auto'")
    }

    func testScheduleJSONHasTheFields() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("schedule-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: url) }
        let run = try twobp("schedule", "--schedule", "1f1b-1", "--stages", "4", "--2bp", "--costs", "F=1,I=1,W=1,act=2,stash=1", "--json", url.path)
        XCTAssertEqual(run.status, 0, run.standardError)
        XCTAssertTrue(run.standardOutput.contains("rank 3: F0 I0 F1 I1 F2 I2 F3 I3 W*"), run.standardOutput)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        XCTAssertEqual(object["step_time"] as? Double, 16)
        XCTAssertEqual((object["bubble_ratio"] as? [Double])?.count, 4)
        XCTAssertEqual((object["peak_memory"] as? [Int])?.count, 4)
        XCTAssertNotNil(object["timeline"] as? [String: Any])
        XCTAssertEqual(object["schedule"] as? String, "1f1b-1+2bp")
    }

    func testPlanMarksEntriesOverATinyLimit() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("plan-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: url) }
        let run = try twobp("plan", "--model", "llama-tiny", "--stages", "2", "--seq-len", "16", "--flops-rate", "1e9",
                            "--memory-limit", "1KiB", "--json", url.path)
        XCTAssertEqual(run.status, 0, run.standardError)
        XCTAssertTrue(run.standardOutput.contains("OVER LIMIT"), run.standardOutput)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let entries = try XCTUnwrap(object["entries"] as? [[String: Any]])
        let rates = entries.compactMap { $0["samples_per_second"] as? Double }
        XCTAssertEqual(rates.count, entries.count)
        XCTAssertEqual(rates, rates.sorted(by: >))
        XCTAssertTrue(entries.allSatisfy { $0["over_limit"] as? Bool == true })
    }
}
