import Foundation
import XCTest

/// TwoBP across "hosts" that are Linux network namespaces on this machine
/// (`scripts/netns-mpirun.sh`): one rank per namespace, Open MPI over TCP only, started
/// through an rsh agent as on a cluster. Needs root to create namespaces; without it, or
/// when namespaces cannot be made, every test fails (never skips): CI runs as root.
final class MultiHostTests: XCTestCase {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    /// How long a failure may take to bring the whole job down, processes included.
    static let failureDeadline = 60.0

    var folder: URL!
    var twobp: URL!

    override func setUpWithError() throws {
        continueAfterFailure = false
        XCTAssertEqual(getuid(), 0, "the multi-host tests create network namespaces and must run as root")
        twobp = try XCTUnwrap(MPIJob.findProduct("twobp"), "twobp not built: run `swift build`")
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-multihost-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        continueAfterFailure = true
    }

    override func tearDownWithError() throws {
        // The harness removes its namespaces itself; this catches a run the test had to kill.
        let down = try HostHarness.script("netns-hosts.sh", ["down"])
        XCTAssertEqual(down.status, 0, down.output)
        assertNoProcessLeft()
        try? FileManager.default.removeItem(at: folder)
    }

    // MARK: Correctness over TCP

    func testVerifyPassesOverTCPOnTwoAndFourHosts() throws {
        let model = folder.appendingPathComponent("model.json")
        try PipelineEquivalenceTests.model.jsonData().write(to: model)
        for hosts in [2, 4] {
            for (schedule, twoBP) in [("1f1b-1", true), ("zb-v", false)] {
                let job = try HostHarness.run(hosts: hosts, twobp, [
                    "verify", "--transport", "mpi", "--model", model.path, "--seq-len", "4", "--stages", String(hosts),
                    "--schedule", schedule] + (twoBP ? ["--2bp"] : []))
                job.assertSucceeded()
                job.assertOutput(contains: "OK: \(schedule)\(twoBP ? " + 2BP" : "") on \(hosts) stages")
            }
        }
    }

    /// Six steps on two hosts, saved as a sharded checkpoint at step 4, give the losses of the same
    /// run on threads; resuming step 4 on threads continues as the uninterrupted thread run.
    func testTrainingOnTwoHostsMatchesThreadsAndItsShardedCheckpointResumesOnThreads() throws {
        let corpus = try writeCorpus()
        func train(_ extra: [String], metrics: String) -> [String] {
            ["train", "--model", "llama-tiny", "--data", corpus.path, "--batch-size", "4", "--seq-len", "16",
             "--eval-every", "100", "--stages", "2", "--schedule", "1f1b-1", "--2bp",
             "--metrics", folder.appendingPathComponent(metrics).path] + extra
        }
        let checkpoint = folder.appendingPathComponent("checkpoint")
        let hosts = try HostHarness.run(hosts: 2, twobp, train(["--transport", "mpi", "--steps", "6", "--checkpoint", checkpoint.path,
                                                                 "--save-every", "4"], metrics: "hosts.jsonl"))
        hosts.assertSucceeded()
        let index = checkpoint.appendingPathComponent("step-4/model.safetensors.index.json")
        XCTAssertTrue(FileManager.default.fileExists(atPath: index.path), "no sharded checkpoint at \(index.path)")
        let threads = try HostHarness.local(twobp, train(["--steps", "6"], metrics: "threads.jsonl"))
        XCTAssertEqual(threads.status, 0, threads.output)
        let resumed = try HostHarness.local(twobp, train(["--steps", "6", "--resume", checkpoint.appendingPathComponent("step-4").path],
                                                          metrics: "resumed.jsonl"))
        XCTAssertEqual(resumed.status, 0, resumed.output)

        let hostLosses = try losses("hosts.jsonl")
        let threadLosses = try losses("threads.jsonl")
        let resumedLosses = try losses("resumed.jsonl")
        XCTAssertEqual(hostLosses.map(\.step), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(threadLosses.map(\.step), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(resumedLosses.map(\.step), [5, 6])
        for (a, b) in Array(zip(hostLosses, threadLosses)) + Array(zip(resumedLosses, threadLosses.suffix(2))) {
            // Same stages and shapes on both sides: equal to rounding.
            XCTAssertEqual(a.loss, b.loss, accuracy: 1e-6 * abs(b.loss), "step \(a.step)")
        }
    }

    // MARK: Faults

    /// SIGKILL the rank on host 1 mid-training: mpirun notices and ends the job naming it.
    func testKillingTheRankOnAnotherHostEndsTheJobNamingIt() throws {
        let job = try trainUntilFault { marker in
            let victim = try XCTUnwrap(Self.rankProcess(1, marker: marker), "no process of rank 1 found")
            kill(victim, SIGKILL)
        }
        job.assertFailed(within: Self.failureDeadline)
        job.assertOutput(matches: #"process rank 1 with PID \d+ on node twobp-h1 exited on signal 9"#)
    }

    /// Pull host 1's cable mid-training: nothing reports an error (TCP just retransmits), so
    /// rank 0's peer watchdog must notice the silence, name rank 1 and end the job.
    func testCuttingTheLinkOfOneHostEndsTheJobNamingTheRank() throws {
        let job = try trainUntilFault(["--peer-timeout", "3"]) { _ in
            let cut = try HostHarness.script("netns-hosts.sh", ["cut", "1"])
            XCTAssertEqual(cut.status, 0, cut.output)
        }
        job.assertFailed(within: Self.failureDeadline)
        job.assertOutput(matches: #"twobp rank 0: heard nothing from rank 1 for \d+ s"#)
    }

    // MARK: The peer watchdog (one host, shared memory)

    func testWatchdogTellsABusyRankFromAGoneOne() throws {
        let busy = try MPIJob.run(ranks: 2, ["busy", "--peer-timeout", "1", "--busy", "3"])
        busy.assertSucceeded(everyRankPrints: "busy ok")
        let silent = try MPIJob.run(ranks: 2, ["silent", "--peer-timeout", "1"])
        silent.assertFailedPromptly(within: 30)
        silent.assertOutput(contains: "twobp rank 0: heard nothing from rank 1 for 1 s")
    }

    // MARK: Support

    func writeCorpus() throws -> URL {
        let corpus = folder.appendingPathComponent("corpus.txt")
        try Data(String(repeating: "Now is the winter of our discontent made glorious summer. ", count: 300).utf8).write(to: corpus)
        return corpus
    }

    func losses(_ name: String) throws -> [(step: Int, loss: Double)] {
        try String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8).split(separator: "\n").map { line in
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            return (try XCTUnwrap(object["step"] as? Int), try XCTUnwrap(object["loss"] as? Double))
        }
    }

    /// Starts a long training on two hosts, waits until two steps are done, runs `fault`
    /// (given the folder name, which every process of the job has in its arguments), and
    /// returns once the job has ended, with the time from the fault to the end.
    func trainUntilFault(_ extra: [String] = [], _ fault: (String) throws -> Void) throws -> HostHarness.Job {
        let corpus = try writeCorpus()
        let metrics = folder.appendingPathComponent("metrics.jsonl")
        let running = try HostHarness.start(hosts: 2, twobp, [
            "train", "--transport", "mpi", "--stages", "2", "--schedule", "gpipe", "--model", "llama-tiny",
            "--data", corpus.path, "--steps", "100000", "--batch-size", "4", "--seq-len", "32", "--eval-every", "100000",
            "--metrics", metrics.path] + extra, log: folder.appendingPathComponent("log.txt"))
        let deadline = Date(timeIntervalSinceNow: 60)
        while ((try? String(contentsOf: metrics, encoding: .utf8))?.split(separator: "\n").count ?? 0) < 2 {
            guard Date() < deadline, running.process.isRunning else {
                let job = try running.finish(since: Date())
                throw NSError(domain: "MultiHostTests", code: 1, userInfo: [
                    NSLocalizedDescriptionKey: "training did not get under way (status \(job.status)):\n\(job.output)"])
            }
            usleep(100_000)
        }
        let faultTime = Date()
        try fault(folder.lastPathComponent)
        return try running.finish(since: faultTime)
    }

    /// The pid of the `twobp` process whose MPI rank is `rank`, among those with `marker` in their arguments.
    static func rankProcess(_ rank: Int, marker: String) -> pid_t? {
        processes().first { process in
            process.commandLine.contains(marker) && process.environment.contains("OMPI_COMM_WORLD_RANK=\(rank)")
        }?.pid
    }

    /// Live (not zombie) processes with their arguments and environment.
    static func processes() -> [(pid: pid_t, commandLine: String, environment: [String])] {
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap { Int32($0) } ?? []
        return pids.compactMap { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")"), !stat[close...].hasPrefix(") Z"),
                  let commandLine = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")) else { return nil }
            let environment = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ"))) ?? Data()
            return (pid, String(decoding: commandLine.map { $0 == 0 ? 32 : $0 }, as: UTF8.self),
                    environment.split(separator: 0).map { String(decoding: $0, as: UTF8.self) })
        }
    }

    /// No daemon, rank or agent of a harness job may outlive it.
    func assertNoProcessLeft(file: StaticString = #filePath, line: UInt = #line) {
        let left = Self.processes().filter { process in
            process.commandLine.contains("netns-rsh-agent") || process.commandLine.contains(folder.lastPathComponent)
        }
        XCTAssertTrue(left.isEmpty, "processes left behind: \(left.map { "\($0.pid) \($0.commandLine)" })", file: file, line: line)
    }
}

/// Runs `scripts/netns-mpirun.sh` and `scripts/netns-hosts.sh`.
enum HostHarness {
    struct Job {
        let command: String
        let status: Int32
        let output: String
        /// Seconds from the start (or the fault) to the end of the harness script.
        let seconds: Double

        private var transcript: String {
            "\(command)\nexit status \(status) after \(String(format: "%.1f", seconds)) s\noutput:\n\(output)"
        }

        func assertSucceeded(file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertEqual(status, 0, "job failed:\n\(transcript)", file: file, line: line)
            assertNothingLeftBehind(file: file, line: line)
        }

        /// Non-zero, ended within `deadline`, every process in the hosts gone by itself.
        func assertFailed(within deadline: Double, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertNotEqual(status, 0, "job should have failed:\n\(transcript)", file: file, line: line)
            XCTAssertNotEqual(status, 125, "job should have failed by itself:\n\(transcript)", file: file, line: line)
            XCTAssertLessThan(seconds, deadline, "job took too long to come down:\n\(transcript)", file: file, line: line)
            assertNothingLeftBehind(file: file, line: line)
        }

        func assertNothingLeftBehind(file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertFalse(output.contains("left behind"), "processes outlived mpirun:\n\(transcript)", file: file, line: line)
        }

        func assertOutput(contains text: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertTrue(output.contains(text), "output lacks \"\(text)\":\n\(transcript)", file: file, line: line)
        }

        func assertOutput(matches pattern: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertNotNil(output.range(of: pattern, options: .regularExpression),
                            "output does not match /\(pattern)/:\n\(transcript)", file: file, line: line)
        }
    }

    /// A harness script that is running; `finish` waits for it (killing it past the hard limit).
    struct Running {
        let process: Process
        let command: String
        let log: URL
        let handle: FileHandle

        func finish(since start: Date, hardLimit: Double = 120) throws -> Job {
            let limit = Date(timeIntervalSinceNow: hardLimit)
            while process.isRunning && Date() < limit { usleep(50_000) }
            let end = Date()
            var note = ""
            if process.isRunning {
                note = "\n[test] the harness ran past \(hardLimit) s and was stopped by the test\n"
                process.terminate()  // its trap removes the namespaces and what runs in them
                let grace = Date(timeIntervalSinceNow: 15)
                while process.isRunning && Date() < grace { usleep(50_000) }
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                process.waitUntilExit()
            }
            try handle.close()
            let output = String(decoding: (try? Data(contentsOf: log)) ?? Data(), as: UTF8.self) + note
            return Job(command: command, status: process.terminationStatus, output: output,
                       seconds: end.timeIntervalSince(start))
        }
    }

    static func scriptURL(_ name: String) -> URL {
        MultiHostTests.packageRoot.appendingPathComponent("scripts").appendingPathComponent(name)
    }

    static func start(_ executable: URL, _ arguments: [String], log: URL) throws -> Running {
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return Running(process: process, command: ([executable.path] + arguments).joined(separator: " "), log: log, handle: handle)
    }

    static func start(hosts: Int, _ program: URL, _ arguments: [String], log: URL) throws -> Running {
        try start(scriptURL("netns-mpirun.sh"), [String(hosts), program.path] + arguments, log: log)
    }

    static func run(hosts: Int, _ program: URL, _ arguments: [String]) throws -> Job {
        try run(scriptURL("netns-mpirun.sh"), [String(hosts), program.path] + arguments)
    }

    static func script(_ name: String, _ arguments: [String]) throws -> Job {
        try run(scriptURL(name), arguments)
    }

    /// `twobp` without MPI, in this process's namespace.
    static func local(_ program: URL, _ arguments: [String]) throws -> Job {
        try run(program, arguments)
    }

    static func run(_ executable: URL, _ arguments: [String]) throws -> Job {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-harness-\(UUID().uuidString).log")
        defer { try? FileManager.default.removeItem(at: log) }
        return try start(executable, arguments, log: log).finish(since: Date())
    }
}
