import Foundation
@testable import Pipeline
import XCTest
import Benchmarks

/// Runs `twobp-mpi-check` (built next to this test bundle) under `mpirun`.
///
/// These tests fail, never skip, when mpirun or the driver is missing: CI installs
/// Open MPI (`openmpi-bin libopenmpi-dev`), and a skipped transport test would hide
/// exactly the breakage it exists to catch.
final class MPITransportTests: XCTestCase {
    /// The deadline the design gives a failed rank to bring the job down.
    static let failureDeadline = 30.0

    // MARK: Correctness

    func testTensorsOfManyShapesCrossTwoRanksIntact() throws {
        let job = try MPIJob.run(ranks: 2, ["pingpong"])
        job.assertSucceeded(everyRankPrints: "pingpong ok")
    }

    func testTensorsOfManyShapesCrossFourRanksIntact() throws {
        let job = try MPIJob.run(ranks: 4, ["pingpong", "--steps", "2"])
        job.assertSucceeded(everyRankPrints: "pingpong ok")
    }

    func testSendingAndReceivingOnDifferentThreads() throws {
        try MPIJob.run(ranks: 2, ["threads"]).assertSucceeded(everyRankPrints: "threads ok")
    }

    func testAllReduceAndGatherOnTwoRanks() throws {
        try MPIJob.run(ranks: 2, ["collectives"]).assertSucceeded(everyRankPrints: "collectives ok")
    }

    func testAllReduceAndGatherOnFourRanks() throws {
        try MPIJob.run(ranks: 4, ["collectives"]).assertSucceeded(everyRankPrints: "collectives ok")
    }

    func testWrongSizedMessagesBecomeErrorsNamingBothRanks() throws {
        let job = try MPIJob.run(ranks: 2, ["mismatch"])
        job.assertSucceeded(everyRankPrints: "mismatch ok")
        job.assertOutput(contains: "rank 0: received 3 floats from rank 1 for activation of micro-batch 0 for stage 0, "
            + "but the schedule expects shape [4] (4 floats)")
        job.assertOutput(contains: "rank 0: receiving activation of micro-batch 1 for stage 0 from rank 1 failed: MPI_ERR_TRUNCATE")
    }

    // MARK: Failure

    func testSIGKILLedRankBringsTwoRankJobDownNamingIt() throws {
        let job = try MPIJob.run(ranks: 2, ["kill", "--victim", "1"])
        job.assertFailedPromptly(within: Self.failureDeadline)
        job.assertOutput(contains: "rank 1: raising SIGKILL")
        // Open MPI 4.1: "mpirun noticed that process rank 1 with PID 0 on node vm exited on signal 9 (Killed)."
        job.assertOutput(matches: #"process rank 1 with PID \d+ on node \S+ exited on signal 9"#)
    }

    func testSIGKILLedMiddleRankBringsFourRankJobDownNamingIt() throws {
        let job = try MPIJob.run(ranks: 4, ["kill", "--victim", "1"])
        job.assertFailedPromptly(within: Self.failureDeadline)
        job.assertOutput(matches: #"process rank 1 with PID \d+ on node \S+ exited on signal 9"#)
    }

    func testFailAbortsTheJobNamingTheRank() throws {
        let job = try MPIJob.run(ranks: 2, ["fail", "--victim", "1"])
        job.assertFailedPromptly(within: Self.failureDeadline)
        job.assertOutput(contains: "twobp rank 1: injected failure at step 2")
    }

    func testFailOnOneOfFourRanksAbortsTheJob() throws {
        let job = try MPIJob.run(ranks: 4, ["fail", "--victim", "2"])
        job.assertFailedPromptly(within: Self.failureDeadline)
        job.assertOutput(contains: "twobp rank 2: injected failure at step 2")
    }

    func testReceiveTimeoutNamesThePeerAndTheTag() throws {
        let job = try MPIJob.run(ranks: 2, ["timeout", "--timeout", "2"])
        job.assertFailedPromptly(within: Self.failureDeadline)
        job.assertOutput(contains: "twobp rank 0: timed out after 2 s waiting for activation of micro-batch 0 "
            + "for stage 0 from rank 1")
    }

    // MARK: Benchmark

    func testBenchmarkReportsTransportAndRawPingPong() throws {
        let sizes = [4096, 65536, 1 << 20]
        let job = try MPIJob.run(ranks: 2, ["bench", "--sizes", sizes.map(String.init).joined(separator: ","),
                                            "--repetitions", "2", "--max-iterations", "20"])
        job.assertSucceeded()
        // Parsed from stdout alone: mpirun forwards stderr (the table) separately and may split a line.
        guard let line = job.standardOutput.split(separator: "\n").first(where: { $0.hasPrefix("{") }) else {
            return XCTFail("no JSON line in the benchmark output:\n\(job.output)")
        }
        let result = try JSONDecoder().decode(TransportBenchmarkResult.self, from: Data(line.utf8))
        XCTAssertEqual(result.transport, "MPITransport")
        XCTAssertEqual(result.reference, "MPI_Send/MPI_Recv")
        XCTAssertEqual(result.ranks, [0, 1])
        XCTAssertEqual(result.hosts.count, 2)
        XCTAssertEqual(result.points.map(\.bytes), sizes)
        for point in result.points {
            for measurement in [point.reference, point.transport] {
                XCTAssertTrue(measurement.latencySeconds > 0 && measurement.latencySeconds.isFinite, "\(point)")
                XCTAssertTrue(measurement.minLatencySeconds > 0 && measurement.minLatencySeconds <= measurement.latencySeconds,
                              "\(point)")
                XCTAssertEqual(measurement.roundTrips, point.iterations * 2, "two rounds of every size")
                XCTAssertEqual(measurement.bandwidthBytesPerSecond * measurement.latencySeconds, Double(point.bytes),
                               accuracy: Double(point.bytes) * 1e-9)
            }
            XCTAssertEqual(point.timeRatio, point.transport.latencySeconds / point.reference.latencySeconds, accuracy: 1e-12)
        }
    }

    // MARK: Without mpirun

    func testLaunchDetectionReadsLauncherVariables() {
        let names = MPIEnvironment.launcherSizeVariables + MPIEnvironment.launcherRankVariables
        let saved = names.map { (name: $0, value: ProcessInfo.processInfo.environment[$0]) }
        defer {
            for (name, value) in saved {
                if let value { setenv(name, value, 1) } else { unsetenv(name) }
            }
        }
        names.forEach { unsetenv($0) }
        XCTAssertFalse(MPIEnvironment.isLaunchedByMPI)
        XCTAssertNil(MPIEnvironment.launchedRank)
        setenv("OMPI_COMM_WORLD_SIZE", "4", 1)
        setenv("OMPI_COMM_WORLD_RANK", "3", 1)
        XCTAssertTrue(MPIEnvironment.isLaunchedByMPI)
        XCTAssertEqual(MPIEnvironment.launchedWorldSize, 4)
        XCTAssertEqual(MPIEnvironment.launchedRank, 3)
        names.forEach { unsetenv($0) }
        setenv("PMI_SIZE", "2", 1)
        setenv("PMI_RANK", "0", 1)
        XCTAssertEqual(MPIEnvironment.launchedWorldSize, 2)
        XCTAssertEqual(MPIEnvironment.launchedRank, 0)
        names.forEach { unsetenv($0) }
        setenv("PMIX_RANK", "1", 1)
        XCTAssertTrue(MPIEnvironment.isLaunchedByMPI, "PMIx announces a rank but no size")
        XCTAssertNil(MPIEnvironment.launchedWorldSize)
        XCTAssertEqual(MPIEnvironment.launchedRank, 1)
    }

    func testBenchmarkConfigurationScalesIterationsAndRejectsBadSizes() throws {
        let configuration = TransportBenchmarkConfiguration()
        XCTAssertEqual(configuration.sizes.first, 4096)
        XCTAssertEqual(configuration.sizes.last, 16 << 20)
        XCTAssertEqual(configuration.iterations(forBytes: 4096), configuration.maxIterations)
        XCTAssertEqual(configuration.iterations(forBytes: 16 << 20), configuration.minIterations)
        XCTAssertEqual(configuration.iterations(forBytes: 1 << 20), 64)
        XCTAssertNoThrow(try configuration.validate())
        XCTAssertThrowsError(try TransportBenchmarkConfiguration(sizes: [4095]).validate())
        XCTAssertThrowsError(try TransportBenchmarkConfiguration(sizes: []).validate())
        XCTAssertThrowsError(try TransportBenchmarkConfiguration(repetitions: 0).validate())
    }
}

/// One finished `mpirun` job: exit status, what it printed, wall time.
struct MPIJob {
    let ranks: Int
    let command: String
    let status: Int32
    let standardOutput: String
    let standardError: String
    let seconds: Double

    /// stdout, then stderr.
    var output: String { standardOutput + standardError }

    /// Longest a job may run before the test kills it (a hang is a failure, not a wait).
    static let hardLimit = 120.0

    /// Runs `executable` (a product of this package) on `ranks` MPI ranks.
    static func run(ranks: Int, executable: String = "twobp-mpi-check", _ arguments: [String],
                    file: StaticString = #filePath, line: UInt = #line) throws -> MPIJob {
        let mpirun = try XCTUnwrap(findMPIRun(), "mpirun not found on PATH: install openmpi-bin and libopenmpi-dev "
            + "(CI does); the MPI transport tests do not skip", file: file, line: line)
        let check = try XCTUnwrap(findProduct(executable), "\(executable) not found next to the test bundle; "
            + "run `swift build` (or set TWOBP_MPI_CHECK)", file: file, line: line)
        let launch = ["--allow-run-as-root", "--oversubscribe", "-np", String(ranks), check.path] + arguments
        // Files, not pipes: nobody has to drain them while mpirun runs.
        let logs = ["out", "err"].map {
            FileManager.default.temporaryDirectory
                .appendingPathComponent("twobp-mpi-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString).\($0)")
        }
        defer { logs.forEach { try? FileManager.default.removeItem(at: $0) } }
        let handles = try logs.map { url in
            _ = FileManager.default.createFile(atPath: url.path, contents: nil)
            return try FileHandle(forWritingTo: url)
        }
        let process = Process()
        process.executableURL = mpirun
        process.arguments = launch
        process.standardOutput = handles[0]
        process.standardError = handles[1]
        process.standardInput = FileHandle.nullDevice
        let start = Date()
        try process.run()
        let finished = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            process.waitUntilExit()
            finished.signal()
        }
        var killedByTest = false
        if finished.wait(timeout: .now() + hardLimit) == .timedOut {
            killedByTest = true
            process.terminate()
            if finished.wait(timeout: .now() + 10) == .timedOut {
                kill(process.processIdentifier, SIGKILL)
                finished.wait()
            }
        }
        let seconds = Date().timeIntervalSince(start)
        try handles.forEach { try $0.close() }
        let texts = logs.map { (try? String(contentsOf: $0, encoding: .utf8)) ?? "" }
        let note = killedByTest ? "\n[test] mpirun ran past \(hardLimit) s and was killed by the test\n" : ""
        return MPIJob(ranks: ranks, command: ([mpirun.path] + launch).joined(separator: " "), status: process.terminationStatus,
                      standardOutput: texts[0], standardError: texts[1] + note, seconds: seconds)
    }

    static func findMPIRun() -> URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let directories = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin"]
        return directories.lazy
            .map { URL(fileURLWithPath: $0).appendingPathComponent("mpirun") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    /// The driver is a product of this package, so SwiftPM puts it in the same build
    /// products directory as the test bundle.
    static func findProduct(_ name: String) -> URL? {
        if name == "twobp-mpi-check", let explicit = ProcessInfo.processInfo.environment["TWOBP_MPI_CHECK"] {
            return URL(fileURLWithPath: explicit)
        }
        var directories = Bundle.allBundles.map(\.bundleURL).filter { $0.pathExtension == "xctest" }
            .map { $0.deletingLastPathComponent() }
        directories.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent())
        let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        directories.append(packageRoot.appendingPathComponent(".build/debug"))
        return directories.lazy
            .map { $0.appendingPathComponent(name) }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    private var transcript: String {
        "\(command)\nexit status \(status) after \(String(format: "%.1f", seconds)) s\n"
            + "stdout:\n\(standardOutput)\nstderr:\n\(standardError)"
    }

    func assertSucceeded(everyRankPrints marker: String? = nil, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(status, 0, "job failed:\n\(transcript)", file: file, line: line)
        guard let marker else { return }
        for rank in 0..<ranks {
            XCTAssertTrue(output.contains("rank \(rank): \(marker)"), "rank \(rank) did not print \"\(marker)\":\n\(transcript)",
                          file: file, line: line)
        }
    }

    func assertFailedPromptly(within deadline: Double, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNotEqual(status, 0, "job should have failed:\n\(transcript)", file: file, line: line)
        XCTAssertLessThan(seconds, deadline, "job took too long to come down:\n\(transcript)", file: file, line: line)
    }

    func assertOutput(contains text: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(output.contains(text), "output lacks \"\(text)\":\n\(transcript)", file: file, line: line)
    }

    func assertOutput(matches pattern: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNotNil(output.range(of: pattern, options: .regularExpression),
                        "output does not match /\(pattern)/:\n\(transcript)", file: file, line: line)
    }
}
