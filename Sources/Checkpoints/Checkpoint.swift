import Files
import Foundation
import Layers
import Tensor

/// Checkpoints: one folder per saved step, `DIR/step-N/`, holding
///
/// - `model.safetensors` (or `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`):
///   the weights under their Hugging Face / torchvision names, F32, matrices `[out, in]`, and the
///   buffers (running statistics F32, counters I64); a tied parameter once;
/// - `optimizer.safetensors` (or its shards + index): the optimizer's state tensors, its step
///   count in the metadata;
/// - `config.json`: the model configuration as the caller encoded it;
/// - `trainer_state.json`: the trainer's state as the caller encoded it, a JSON object with an
///   integer `step`.
///
/// Saving is atomic: everything is written into the hidden sibling
/// `DIR/.step-N.partial`, fsynced, then renamed to `step-N` and the parent
/// fsynced. A run killed mid-save leaves only the partial folder, which
/// `latest(in:)` ignores and the next save removes; earlier steps stay intact.
/// One process saves into a `DIR` at a time.
public enum Checkpoint {
    public static let modelBaseName = "model"
    public static let optimizerBaseName = "optimizer"
    public static let configFileName = "config.json"
    public static let stateFileName = "trainer_state.json"

    public static func folderName(step: Int) -> String { "step-\(step)" }

    static let partialPrefix = ".step-"
    static let partialSuffix = ".partial"

    /// Saves already-collected tensors (for example gathered from MPI ranks): one shard per element
    /// of `model` and of `optimizer` (one element: a single file). `config` and `state` must be
    /// JSON objects, `state` holding the integer `step` the folder is named after.
    @discardableResult
    public static func save(in directory: URL, model: [[StoredTensor]], optimizer: [[StoredTensor]],
                            optimizerMetadata: [String: String], config: Data, state: Data) throws -> URL {
        let step = try savedStep(state)
        let partial = try beginSave(in: directory, step: step)
        do {
            try SafeTensors.writeSharded(model, to: partial, baseName: modelBaseName)
            try SafeTensors.writeSharded(optimizer, to: partial, baseName: optimizerBaseName, metadata: optimizerMetadata)
            return try finishSave(partial, in: directory, config: config, state: state)
        } catch {
            try? FileIO.remove(partial)
            throw error
        }
    }

    /// The `step` of a trainer state: what the folder is named after.
    static func savedStep(_ state: Data) throws -> Int {
        struct Step: Decodable { let step: Int }
        guard let step = try? JSONDecoder().decode(Step.self, from: state).step else {
            throw TwoBPError("the trainer state to save has no integer \"step\"")
        }
        return step
    }

    /// Creates `DIR/.step-N.partial` (removing leftovers of interrupted saves) for the tensors to go into.
    static func beginSave(in directory: URL, step: Int) throws -> URL {
        guard step >= 0 else { throw TwoBPError("cannot save a checkpoint for step \(step)") }
        try FileIO.createDirectory(directory)
        try removePartialFolders(in: directory)
        let partial = partialFolder(in: directory, step: step)
        try FileIO.createDirectory(partial)
        return partial
    }

    static func partialFolder(in directory: URL, step: Int) -> URL {
        directory.appendingPathComponent(partialPrefix + "\(step)" + partialSuffix)
    }

    /// Writes config and trainer state into the partial folder, fsyncs it, and publishes it
    /// as `DIR/step-N` with one rename (replacing an earlier save of the same step).
    static func finishSave(_ partial: URL, in directory: URL, config: Data, state: Data) throws -> URL {
        try requireJSONObject(config) { "the model configuration to save is not a JSON object (\($0))" }
        let step = try savedStep(state)
        let final = directory.appendingPathComponent(folderName(step: step))
        try FileIO.writeDurably(partial.appendingPathComponent(configFileName), bytes: [UInt8](config))
        try FileIO.writeDurably(partial.appendingPathComponent(stateFileName), bytes: [UInt8](state))
        try FileIO.syncDirectory(partial)
        if FileManager.default.fileExists(atPath: final.path) {
            // Saving a step again (after a resume): move the old one aside first,
            // since rename cannot replace a non-empty folder.
            let replaced = directory.appendingPathComponent(partialPrefix + "\(step).replaced" + partialSuffix)
            try FileIO.rename(final, to: replaced)
            try FileIO.rename(partial, to: final)
            try FileIO.remove(replaced)
        } else {
            try FileIO.rename(partial, to: final)
        }
        try FileIO.syncDirectory(directory)
        return final
    }

    /// Throws `message(reason)` unless `data` is one JSON object.
    static func requireJSONObject(_ data: Data, message: (String) -> String) throws {
        struct JSONObject: Decodable {
            init(from decoder: Decoder) throws { _ = try decoder.container(keyedBy: Header.Key.self) }
        }
        do {
            _ = try JSONDecoder().decode(JSONObject.self, from: data)
        } catch let error as DecodingError {
            if case .typeMismatch = error { throw TwoBPError(message("not a JSON object")) }
            throw TwoBPError(message(error.summary))
        }
    }

    /// Removes leftovers of interrupted saves (`.step-*.partial`).
    static func removePartialFolders(in directory: URL) throws {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        for name in names where name.hasPrefix(partialPrefix) && name.hasSuffix(partialSuffix) {
            try FileIO.remove(directory.appendingPathComponent(name))
        }
    }

    /// The pieces a complete step folder lacks (empty when complete).
    public static func missingPieces(in folder: URL) -> [String] {
        var missing: [String] = []
        for base in [modelBaseName, optimizerBaseName] {
            let single = folder.appendingPathComponent("\(base).safetensors")
            let index = folder.appendingPathComponent("\(base).safetensors.index.json")
            if !FileIO.isFile(single) && !FileIO.isFile(index) { missing.append("\(base).safetensors") }
        }
        for file in [configFileName, stateFileName] where !FileIO.isFile(folder.appendingPathComponent(file)) {
            missing.append(file)
        }
        return missing
    }

    /// The step of a folder named `step-N`, or nil.
    static func step(ofFolderNamed name: String) -> Int? {
        guard name.hasPrefix("step-") else { return nil }
        let digits = name.dropFirst(5)
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(digits)
    }

    /// The complete `step-N` folder with the highest N in `directory`, or nil
    /// when there is none (or no `directory`). Partial folders and step folders
    /// missing a piece are skipped.
    public static func latest(in directory: URL) throws -> URL? {
        guard FileIO.isDirectory(directory) else { return nil }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw TwoBPError("cannot list checkpoint folder \(directory.path): \(error.localizedDescription)")
        }
        let candidates = names.compactMap { name in step(ofFolderNamed: name).map { (step: $0, name: name) } }
            .sorted { $0.step > $1.step }
        for candidate in candidates {
            let folder = directory.appendingPathComponent(candidate.name)
            if FileIO.isDirectory(folder) && missingPieces(in: folder).isEmpty { return folder }
        }
        return nil
    }

    /// What `--resume PATH` names: a step folder (it holds `trainer_state.json`),
    /// or a checkpoint directory, meaning its latest complete step.
    public static func resolve(_ url: URL) throws -> URL {
        guard FileIO.isDirectory(url) else {
            throw TwoBPError(FileManager.default.fileExists(atPath: url.path)
                ? "\(url.path) is a file; --resume takes a checkpoint folder (DIR or DIR/step-N)"
                : "no checkpoint at \(url.path)")
        }
        if FileIO.isFile(url.appendingPathComponent(stateFileName)) || step(ofFolderNamed: url.lastPathComponent) != nil {
            let missing = missingPieces(in: url)
            guard missing.isEmpty else {
                throw TwoBPError("checkpoint \(url.path) is incomplete: missing \(missing.joined(separator: ", "))")
            }
            return url
        }
        guard let folder = try latest(in: url) else {
            throw TwoBPError("\(url.path) holds no complete checkpoint (a step-N folder with model.safetensors, optimizer.safetensors, config.json and trainer_state.json)")
        }
        return folder
    }

    /// Opens and validates a step folder (or, through `resolve`, a directory).
    public static func load(from url: URL) throws -> LoadedCheckpoint {
        let folder = try resolve(url)
        let stateURL = folder.appendingPathComponent(stateFileName)
        let state = try FileIO.read(stateURL, what: "trainer state")
        try requireJSONObject(state) { "checkpoint \(folder.path): \(stateFileName) is corrupt (\($0))" }
        let step: Int
        do {
            step = try savedStep(state)
        } catch {
            throw TwoBPError("checkpoint \(folder.path): \(stateFileName) has no integer \"step\"")
        }
        if let named = self.step(ofFolderNamed: folder.lastPathComponent), named != step {
            throw TwoBPError("checkpoint \(folder.path): \(stateFileName) says step \(step), the folder name says \(named)")
        }
        let configURL = folder.appendingPathComponent(configFileName)
        let config = try FileIO.read(configURL, what: "model configuration")
        try requireJSONObject(config) { "checkpoint \(folder.path): \(configFileName) is corrupt (\($0))" }
        return LoadedCheckpoint(folder: folder, step: step, state: Data(state), config: Data(config),
                                model: try SafeTensors.open(folder, baseName: modelBaseName),
                                optimizer: try SafeTensors.open(folder, baseName: optimizerBaseName))
    }
}

/// A validated checkpoint: its files are checked and mapped, tensors are read on demand.
public struct LoadedCheckpoint {
    /// The `step-N` folder.
    public let folder: URL
    /// Optimizer steps the saved run had taken: N.
    public let step: Int
    /// `trainer_state.json` as saved (a JSON object with `step`); the trainer decodes the rest.
    public let state: Data
    /// `config.json` as saved (a JSON object); decode it into the model's configuration.
    public let config: Data
    public let model: SafeTensorsArchive
    public let optimizer: SafeTensorsArchive
}
