import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The classes of bad input of issue 8, each through the built `twobp`: a clear error (or the
/// expected behaviour for unusual paths), never a crash, a hang or a silent surprise.
extension CommandLineErrorTests {
    private func scratchFolder() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-bad-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        return folder
    }

    private func textFile(in folder: URL) throws -> URL {
        let text = folder.appendingPathComponent("text.txt")
        try Data(String(repeating: "Friends, Romans, countrymen, lend me your ears. ", count: 600).utf8).write(to: text)
        return text
    }

    /// A tiny training run's arguments (llama-tiny, 8 tokens, batches of 2, no validation).
    private func tinyTrain(_ data: URL, steps: Int = 1) -> [String] {
        ["train", "--data", data.path, "--seq-len", "8", "--batch-size", "2", "--steps", "\(steps)", "--eval-every", "100"]
    }

    /// Sizes are estimated before anything is allocated: a model or batch too large is refused with the figure.
    func testTooLargeForMemoryIsRefusedBeforeAllocating() throws {
        let folder = try scratchFolder()
        let text = try textFile(in: folder)
        try assertOneLineError(["verify", "--batch-size", "100000000"], contains: "verify would need about")
        try assertOneLineError(tinyTrain(text) + ["--memory-limit", "1MiB"], contains: "more than --memory-limit 1.0 MiB")
        try assertOneLineError(["bench", "step", "--batch-size", "100000000"], contains: "would need about")
        for (field, value) in [("hidden_size", "1000000"), ("num_hidden_layers", "100000")] {
            var fields = ["hidden_size": "64", "intermediate_size": "172", "num_hidden_layers": "4", "num_attention_heads": "4",
                          "vocab_size": "256", "max_position_embeddings": "64"]
            fields[field] = value
            let config = folder.appendingPathComponent("\(field).json")
            let json = "{\"model_type\": \"llama\", " + fields.map { "\"\($0)\": \($1)" }.joined(separator: ", ") + "}"
            try Data(json.utf8).write(to: config)
            try assertOneLineError(["train", "--model", config.path, "--data", text.path, "--steps", "1"], contains: "train would need about")

            // eval and generate: the checkpoint's config is sized before its model is built.
            let step = folder.appendingPathComponent("\(field)-checkpoint")
            try FileManager.default.createDirectory(at: step, withIntermediateDirectories: true)
            try Data(json.utf8).write(to: step.appendingPathComponent("config.json"))
            try Data([2, 0, 0, 0, 0, 0, 0, 0] + Array("{}".utf8)).write(to: step.appendingPathComponent("model.safetensors"))
            try assertOneLineError(["eval", "--checkpoint", step.path, "--data", text.path], contains: "eval would need about")
            try assertOneLineError(["generate", "--checkpoint", step.path, "--prompt", "To"], contains: "generate would need about")
        }
        let negative = folder.appendingPathComponent("negative.json")
        try Data(#"{"model_type": "llama", "hidden_size": -64, "intermediate_size": 172, "num_hidden_layers": 4, "num_attention_heads": 4, "vocab_size": 256, "max_position_embeddings": 64}"#.utf8).write(to: negative)
        try assertOneLineError(["train", "--model", negative.path, "--data", text.path], contains: "hidden_size must be positive, got -64")
    }

    /// Lists, plans and options that cannot mean anything are refused, and saying why.
    func testEmptyDuplicateAndUnplannableRequestsAreRefused() throws {
        try assertOneLineError(["bench", "pipeline", "--schedules", ""], contains: "--schedules names no schedule")
        try assertOneLineError(["bench", "pipeline", "--schedules", ",,,"], contains: "--schedules names no schedule")
        try assertOneLineError(["bench", "pipeline", "--schedules", "gpipe,,1f1b-1"], contains: "has an empty entry")
        try assertOneLineError(["bench", "pipeline", "--schedules", "gpipe,gpipe"], contains: "names gpipe twice")
        let plan = ["plan", "--model", "llama-tiny", "--flops-rate", "1e9"]
        try assertOneLineError(plan + ["--stages", "64"], contains: "no schedule can be planned: 64 pipeline stages need at least 64 blocks")
        try assertOneLineError(plan + ["--stages", "2", "--efficiency", "-1"], contains: "--efficiency must be a positive fraction")
        try assertOneLineError(plan + ["--stages", "2", "--latency", "-1"], contains: "--latency must be zero or more")
        try assertOneLineError(plan + ["--stages", "2", "--micro-batches", "1000000"], contains: "more than the 10000 a schedule accepts")
        try assertOneLineError(["schedule", "--stages", "1000000"], contains: "more than the 1024")

        let folder = try scratchFolder()
        let costs = folder.appendingPathComponent("costs.json")
        try Data(#"{"stages": [{"forward": 1, "backwardInput": 1, "backwardWeight": 1}, {"forward": 1, "backwardInput": 1, "backwardWeight": 1}]}"#.utf8).write(to: costs)
        let twoStageProfile = try twobp(["plan", "--model", "llama-tiny", "--stages", "4", "--costs", costs.path])
        XCTAssertEqual(twoStageProfile.status, 1, twoStageProfile.standardError)
        XCTAssertTrue(twoStageProfile.standardError.contains("no schedule can be planned"), twoStageProfile.standardError)

        let svg = try twobp(["profile", "--svg", folder.appendingPathComponent("x.svg").path])
        XCTAssertNotEqual(svg.status, 0)
        XCTAssertTrue(svg.standardError.contains("--svg draws the --compare run; add --compare"), svg.standardError)
    }

    /// Negative numbers after a space reach the option's own check; special files are not data.
    func testNegativeNumbersSpecialFilesAndTheShortDataHint() throws {
        for (option, value) in [("--steps", "-3"), ("--batch-size", "-2"), ("--eval-every", "-1")] {
            let outcome = try twobp(["train", option, value])
            XCTAssertNotEqual(outcome.status, 0)
            XCTAssertTrue(outcome.standardError.contains("\(option) must be at least 1, got \(value)"), outcome.standardError)
        }
        try assertOneLineError(["train", "--data", "/dev/null"], contains: "/dev/null is a character device, not a regular file")
        let folder = try scratchFolder()
        let fifo = folder.appendingPathComponent("fifo")
        XCTAssertEqual(mkfifo(fifo.path, 0o644), 0)
        try assertOneLineError(["train", "--data", fifo.path], contains: "is a FIFO, not a regular file")

        // Each short-data message names a size; written at that size, the file then trains
        // (the held-out windows, then a whole validation batch, are what the sizes cover).
        let text = try Data(contentsOf: try textFile(in: folder))
        let short = folder.appendingPathComponent("short.txt")
        try text.prefix(300).write(to: short)
        var outcome = try twobp(["train", "--data", short.path, "--seq-len", "16", "--steps", "1"])
        var sizes: [Int] = []
        while outcome.status != 0, sizes.count < 3 {
            let message = outcome.standardError
            let range = try XCTUnwrap(message.range(of: #"at least [0-9]+ bytes"#, options: .regularExpression), message)
            sizes.append(try XCTUnwrap(Int(message[range].split(separator: " ")[2])))
            try text.prefix(sizes.last!).write(to: short)
            outcome = try twobp(["train", "--data", short.path, "--seq-len", "16", "--steps", "1"])
        }
        XCTAssertEqual(outcome.status, 0, "sizes named: \(sizes); \(outcome.standardError)")
        XCTAssertEqual(sizes, sizes.sorted())
    }

    /// A checkpoint folder is one run's: another run, a second process and an unwritable folder are refused.
    func testACheckpointFolderBelongsToOneRun() throws {
        let folder = try scratchFolder()
        let text = try textFile(in: folder)
        let checkpoint = folder.appendingPathComponent("run")
        let first = try twobp(tinyTrain(text, steps: 2) + ["--checkpoint", checkpoint.path, "--save-every", "1", "--seed", "1"])
        XCTAssertEqual(first.status, 0, first.standardError)
        try assertOneLineError(tinyTrain(text) + ["--checkpoint", checkpoint.path, "--seed", "2"],
                               contains: "holds run ")
        XCTAssertTrue(FileManager.default.fileExists(atPath: checkpoint.appendingPathComponent("step-2").path), "the old run was touched")

        let resumed = try twobp(tinyTrain(text, steps: 3) + ["--checkpoint", checkpoint.path, "--resume", checkpoint.path, "--seed", "1"])
        XCTAssertEqual(resumed.status, 0, resumed.standardError)

        let replaced = try twobp(tinyTrain(text) + ["--checkpoint", checkpoint.path, "--seed", "2", "--overwrite"])
        XCTAssertEqual(replaced.status, 0, replaced.standardError)
        let names = try FileManager.default.contentsOfDirectory(atPath: checkpoint.path).filter { $0.hasPrefix("step-") }
        XCTAssertEqual(names, ["step-1"], "--overwrite keeps none of the old run's steps")

        // Another process holding the folder's lock.
        let lock = open(checkpoint.appendingPathComponent(".lock").path, O_RDWR)
        XCTAssertGreaterThanOrEqual(lock, 0)
        defer { close(lock) }
        XCTAssertEqual(flock(lock, LOCK_EX | LOCK_NB), 0)
        let pid = Array("\(getpid())\n".utf8)
        XCTAssertEqual(ftruncate(lock, 0), 0)
        XCTAssertEqual(pid.withUnsafeBytes { pwrite(lock, $0.baseAddress, $0.count, 0) }, pid.count)
        try assertOneLineError(tinyTrain(text) + ["--checkpoint", checkpoint.path, "--overwrite"],
                               contains: "is in use by process \(getpid())")

        try assertOneLineError(tinyTrain(text) + ["--checkpoint", text.appendingPathComponent("sub").path],
                               contains: "is a file, not a folder")
    }

    /// Outputs: folders and missing parents refused up front, FIFOs and links written through,
    /// a full device reported, never an NSCocoaErrorDomain dump.
    func testOutputsAreReplacedOnlyWhenTheyAreRegularFiles() throws {
        let folder = try scratchFolder()
        let schedule = ["schedule", "--schedule", "1f1b-1", "--stages", "2"]
        try assertOneLineError(schedule + ["--json", folder.path], contains: "--json \(folder.path) is a folder")
        try assertOneLineError(schedule + ["--svg", folder.appendingPathComponent("missing/x.svg").path], contains: "does not exist")
        try assertOneLineError(schedule + ["--json", "/dev/full"], contains: "No space left on device")
        let text = try textFile(in: folder)
        try assertOneLineError(tinyTrain(text) + ["--summary", folder.path], contains: "--summary \(folder.path) is a folder")

        // A symbolic link stays a link; its target gets the output.
        let target = folder.appendingPathComponent("target.json")
        let link = folder.appendingPathComponent("link.json")
        try Data("old".utf8).write(to: target)
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: target)
        XCTAssertEqual(try twobp(schedule + ["--json", link.path]).status, 0)
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: link.path), target.path)
        XCTAssertTrue(String(decoding: try Data(contentsOf: target), as: UTF8.self).contains("\"schedule\""))

        // A FIFO's reader gets the output and the FIFO stays a FIFO.
        let fifo = folder.appendingPathComponent("out.fifo")
        XCTAssertEqual(mkfifo(fifo.path, 0o644), 0)
        let reader = open(fifo.path, O_RDONLY | O_NONBLOCK)
        XCTAssertGreaterThanOrEqual(reader, 0)
        defer { close(reader) }
        let process = Process()
        process.executableURL = try XCTUnwrap(MPIJob.findProduct("twobp"))
        process.arguments = schedule + ["--json", fifo.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let running = process.isRunning
            let count = buffer.withUnsafeMutableBytes { read(reader, $0.baseAddress, $0.count) }
            if count > 0 { received += buffer[0..<count]; continue }
            if !running { break }
            usleep(10_000)
        }
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        XCTAssertTrue(String(decoding: received, as: UTF8.self).contains("\"schedule\""))
        var status = stat()
        XCTAssertEqual(stat(fifo.path, &status), 0)
        XCTAssertEqual(status.st_mode & S_IFMT, S_IFIFO, "the FIFO was replaced")
    }

    /// A NaN weight is an error on load naming the tensor; an mpirun launch without --transport mpi is refused.
    func testNonFiniteWeightsAndMPILaunchesWithoutMPITransport() throws {
        let folder = try scratchFolder()
        let text = try textFile(in: folder)
        let checkpoint = folder.appendingPathComponent("run")
        let trained = try twobp(tinyTrain(text) + ["--checkpoint", checkpoint.path])
        XCTAssertEqual(trained.status, 0, trained.standardError)
        let weights = checkpoint.appendingPathComponent("step-1/model.safetensors")
        var bytes = [UInt8](try Data(contentsOf: weights))
        let headerLength = bytes[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        struct Entry: Decodable { let dtype: String; let data_offsets: [Int] }
        let header = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + headerLength)])) as? [String: Any] ?? [:]
        let (name, entry) = try XCTUnwrap(header.filter { $0.key != "__metadata__" }.compactMap { key, value -> (String, Entry)? in
            guard let data = try? JSONSerialization.data(withJSONObject: value),
                  let entry = try? JSONDecoder().decode(Entry.self, from: data), entry.dtype == "F32" else { return nil }
            return (key, entry)
        }.sorted { $0.0 < $1.0 }.first)
        let offset = 8 + headerLength + entry.data_offsets[0] + 4  // element 1
        bytes.replaceSubrange(offset..<(offset + 4), with: withUnsafeBytes(of: Float.nan.bitPattern.littleEndian, Array.init))
        try Data(bytes).write(to: weights)
        try assertOneLineError(["eval", "--checkpoint", checkpoint.path, "--data", text.path, "--seq-len", "8"],
                               contains: "tensor '\(name)' holds a non-finite value (nan at element 1)")
        try assertOneLineError(["generate", "--checkpoint", checkpoint.path, "--prompt", "To"], contains: "non-finite value")
        try assertOneLineError(tinyTrain(text, steps: 2) + ["--resume", checkpoint.path], contains: "non-finite value")

        try assertOneLineError(tinyTrain(text) + ["--stages", "2"], contains: "add --transport mpi",
                               environment: ["OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"])
    }
}
