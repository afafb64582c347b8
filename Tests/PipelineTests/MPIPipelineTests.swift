import Foundation
import Models
import Schedules
import XCTest

/// The same pipeline across processes: `twobp` under `mpirun`, one rank per stage.
final class MPIPipelineTests: XCTestCase {
    /// A config.json of the eight-layer test model, so every schedule fits on 4 ranks.
    func modelConfigPath() throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-mpi-model-\(UUID().uuidString).json")
        try PipelineEquivalenceTests.model.jsonData().write(to: url)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url.path
    }

    func testVerifyPassesForEveryScheduleOnTwoAndFourRanks() throws {
        let model = try modelConfigPath()
        for ranks in [2, 4] {
            for kind in ScheduleKind.allCases {
                for twoBP in [false, true] {
                    let arguments = ["verify", "--transport", "mpi", "--model", model, "--seq-len", "4",
                                     "--stages", String(ranks), "--schedule", kind.rawValue] + (twoBP ? ["--2bp"] : [])
                    let job = try MPIJob.run(ranks: ranks, executable: "twobp", arguments)
                    job.assertSucceeded()
                    job.assertOutput(contains: "OK: \(kind.rawValue)\(twoBP ? " + 2BP" : "") on \(ranks) stages")
                }
            }
        }
    }

    /// BERT's tied decoder across processes: the word embeddings on rank 0, the decoder on the last rank.
    func testBertVerifyPassesUnderMPIOnTwoAndFourRanks() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-mpi-bert-\(UUID().uuidString).json")
        try BertPipelineEquivalenceTests.model.jsonData().write(to: url)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        for (ranks, schedule) in [(2, "1f1b-2"), (4, "1f1b-1")] {
            let job = try MPIJob.run(ranks: ranks, executable: "twobp", ["verify", "--transport", "mpi", "--model", url.path, "--seq-len", "12",
                                                                         "--stages", String(ranks), "--schedule", schedule, "--2bp"])
            job.assertSucceeded()
            job.assertOutput(contains: "OK: \(schedule) + 2BP on \(ranks) stages")
        }
    }

    func testMPITrainingFollowsTheThreadTrainingLossSequence() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-mpi-train-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        let corpus = folder.appendingPathComponent("corpus.txt")
        try Data(String(repeating: "To be, or not to be, that is the question. ", count: 200).utf8).write(to: corpus)
        let common = ["train", "--model", "llama-tiny", "--data", corpus.path, "--steps", "4", "--batch-size", "4",
                      "--seq-len", "16", "--eval-every", "100", "--stages", "2", "--schedule", "1f1b-1", "--2bp"]
        let mpiMetrics = folder.appendingPathComponent("mpi.jsonl")
        let threadMetrics = folder.appendingPathComponent("threads.jsonl")
        try MPIJob.run(ranks: 2, executable: "twobp", common + ["--transport", "mpi", "--metrics", mpiMetrics.path]).assertSucceeded()
        try MPIJob.run(ranks: 1, executable: "twobp", common + ["--metrics", threadMetrics.path]).assertSucceeded()
        let mpiLosses = try losses(in: mpiMetrics)
        let threadLosses = try losses(in: threadMetrics)
        XCTAssertEqual(mpiLosses.count, 4)
        XCTAssertEqual(mpiLosses.count, threadLosses.count)
        for (mpi, threads) in zip(mpiLosses, threadLosses) { XCTAssertEqual(mpi, threads, accuracy: 1e-9) }
    }

    func losses(in url: URL) throws -> [Double] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            return try XCTUnwrap(object?["loss"] as? Double)
        }
    }

    /// SIGKILL one rank of a running `twobp train`; the job must end within 30 s, non-zero, naming the rank.
    func testKillingARankMidTrainingEndsTheJobNamingIt() throws {
        let mpirun = try XCTUnwrap(MPIJob.findMPIRun(), "mpirun not found: install openmpi-bin")
        let twobp = try XCTUnwrap(MPIJob.findProduct("twobp"), "twobp not built")
        let marker = "twobp-kill-\(UUID().uuidString)"
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent(marker)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        let corpus = folder.appendingPathComponent("corpus.txt")
        try Data(String(repeating: "Now is the winter of our discontent. ", count: 400).utf8).write(to: corpus)
        let log = folder.appendingPathComponent("log.txt")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let output = try FileHandle(forWritingTo: log)
        let process = Process()
        process.executableURL = mpirun
        process.arguments = ["--allow-run-as-root", "--oversubscribe", "-np", "2", twobp.path, "train", "--transport", "mpi",
                             "--stages", "2", "--schedule", "gpipe", "--model", "llama-tiny", "--data", corpus.path,
                             "--steps", "100000", "--batch-size", "4", "--seq-len", "32", "--eval-every", "100000",
                             "--metrics", folder.appendingPathComponent("metrics.jsonl").path]
        process.standardOutput = output
        process.standardError = output
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

        // Wait until training is under way, then kill rank 1.
        let metrics = folder.appendingPathComponent("metrics.jsonl")
        let deadline = Date(timeIntervalSinceNow: 60)
        while ((try? String(contentsOf: metrics, encoding: .utf8))?.split(separator: "\n").count ?? 0) < 2 {
            XCTAssertTrue(process.isRunning, "training ended before the kill: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
            guard Date() < deadline, process.isRunning else { return XCTFail("training did not start within 60 s") }
            usleep(100_000)
        }
        let victim = try XCTUnwrap(rankProcess(1, marker: marker), "no process of rank 1 found")
        let killed = Date()
        kill(victim, SIGKILL)
        while process.isRunning && Date().timeIntervalSince(killed) < 60 { usleep(100_000) }
        let seconds = Date().timeIntervalSince(killed)
        XCTAssertFalse(process.isRunning, "the job was still running 60 s after rank 1 was killed")
        XCTAssertLessThan(seconds, 30)
        XCTAssertNotEqual(process.terminationStatus, 0)
        try output.close()
        let text = try String(contentsOf: log, encoding: .utf8)
        XCTAssertNotNil(text.range(of: "rank 1 .*(signal 9|Killed)", options: .regularExpression), text)
    }

    /// The pid of the `twobp` process whose MPI rank is `rank`, among those started with `marker` in their arguments.
    func rankProcess(_ rank: Int, marker: String) -> pid_t? {
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap { Int32($0) } ?? []
        return pids.first { pid in
            guard let commandLine = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")),
                  String(decoding: commandLine, as: UTF8.self).contains(marker),
                  let environment = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ")) else { return false }
            return environment.split(separator: 0).contains { String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=\(rank)" }
        }
    }
}
