import Files
import Foundation
import Tensor

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A checkpoint folder belongs to one run, and one process writes it at a time.
///
/// Without this, a new run pointed at an old run's folder would replace the old `step-N`
/// folders it reaches and keep the later ones, so a `--resume` afterwards continued a mix of
/// two runs; two processes saving into one folder would interleave their steps. A claim:
///
/// - locks `DIR/.lock` (`flock`, held until the process exits, even when it is killed) and
///   writes the process id into it, so a second process refuses with "in use by process N";
/// - records the run's id in `DIR/run.json` when the folder starts a run;
/// - refuses a folder that already holds step folders unless this run resumes from it
///   (`--resume DIR` or `DIR/step-N`) or the user asked to start over (`--overwrite`,
///   which removes the old step folders first).
///
/// Creating the folder and the lock file also proves, at the start, that it is writable.
public final class CheckpointClaim {
    public static let runFileName = "run.json"
    public static let lockFileName = ".lock"

    public let directory: URL
    /// The id of the run that owns the folder (kept across resumes).
    public let runID: String
    private let lockDescriptor: Int32

    struct RunRecord: Codable {
        var runID: String
        enum CodingKeys: String, CodingKey { case runID = "run_id" }
    }

    /// Claims `directory` for this process's run; `resuming` is the `--resume` path, if any.
    public init(_ directory: URL, resuming: URL?, overwrite: Bool) throws {
        self.directory = directory
        if FileManager.default.fileExists(atPath: directory.path), !FileIO.isDirectory(directory) {
            throw TwoBPError("--checkpoint \(directory.path) is a file, not a folder")
        }
        try FileIO.createDirectory(directory)
        lockDescriptor = try Self.lock(directory)
        do {
            runID = try Self.settleOwnership(directory, resuming: resuming, overwrite: overwrite)
        } catch {
            _ = close(lockDescriptor)
            throw error
        }
    }

    deinit { _ = close(lockDescriptor) }

    /// Takes the folder's lock without waiting; the holder's process id is in the file.
    private static func lock(_ directory: URL) throws -> Int32 {
        let url = directory.appendingPathComponent(lockFileName)
        let descriptor = open(url.path, O_RDWR | O_CREAT, 0o644)
        guard descriptor >= 0 else {
            throw TwoBPError("checkpoint folder \(directory.path) is not writable: cannot create \(lockFileName) (\(FileIO.errnoText()))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOf: url, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            _ = close(descriptor)
            throw TwoBPError("checkpoint folder \(directory.path) is in use by process \(holder.flatMap { $0.isEmpty ? nil : $0 } ?? "(unknown)"); "
                + "wait for it to finish or choose another --checkpoint")
        }
        let text = Array("\(getpid())\n".utf8)
        guard ftruncate(descriptor, 0) == 0, text.withUnsafeBytes({ pwrite(descriptor, $0.baseAddress, $0.count, 0) }) == text.count else {
            _ = close(descriptor)
            throw TwoBPError("checkpoint folder \(directory.path) is not writable: cannot write \(lockFileName) (\(FileIO.errnoText()))")
        }
        return descriptor
    }

    /// The owning run's id after deciding whether this run may write the folder.
    private static func settleOwnership(_ directory: URL, resuming: URL?, overwrite: Bool) throws -> String {
        let runURL = directory.appendingPathComponent(runFileName)
        let recorded = try? JSONDecoder().decode(RunRecord.self, from: Data(contentsOf: runURL)).runID
        let steps = try stepFolders(in: directory)
        let resumesHere = resuming.map { resumes(from: $0, into: directory) } ?? false
        if resumesHere, let recorded { return recorded }
        if !steps.isEmpty && !resumesHere {
            guard overwrite else {
                let owner = recorded.map { "run \($0)" } ?? "another run"
                throw TwoBPError("checkpoint folder \(directory.path) holds \(owner)'s checkpoints (\(steps.joined(separator: ", "))); "
                    + "continue that run with --resume \(directory.path), choose another --checkpoint, or add --overwrite to replace it")
            }
            for name in steps { try FileIO.remove(directory.appendingPathComponent(name)) }
            try Checkpoint.removePartialFolders(in: directory)
        }
        let runID = UUID().uuidString.lowercased()
        try FileIO.writeDurably(runURL, bytes: [UInt8](JSONEncoder().encode(RunRecord(runID: runID))))
        return runID
    }

    /// The `step-N` folders in `directory`, in step order.
    private static func stepFolders(in directory: URL) throws -> [String] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw TwoBPError("cannot list checkpoint folder \(directory.path): \(error.localizedDescription)")
        }
        return names.compactMap { name in Checkpoint.step(ofFolderNamed: name).map { (step: $0, name: name) } }
            .sorted { $0.step < $1.step }.map(\.name)
    }

    /// Whether `--resume resume` names `directory` or one of its step folders.
    private static func resumes(from resume: URL, into directory: URL) -> Bool {
        func canonical(_ url: URL) -> String { url.resolvingSymlinksInPath().standardizedFileURL.path }
        let target = canonical(directory)
        return canonical(resume) == target || canonical(resume.deletingLastPathComponent()) == target
    }
}
