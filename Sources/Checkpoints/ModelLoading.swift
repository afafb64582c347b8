import Files
import Foundation
import Layers
import Models
import Tensor

/// Loading a trained model of any family for inference (`twobp generate`, `twobp eval`).
///
/// Inference needs only `config.json` and the weights (`model.safetensors`, or the sharded
/// `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`), so `resolveFolder`
/// accepts, in this order:
///
/// - a folder holding those two, e.g. one written by Hugging Face `save_pretrained`, or a
///   training checkpoint's `DIR/step-N` (its optimizer state and trainer state are not read);
/// - a training checkpoint `DIR`: its `step-N` folder with the highest N that holds both
///   (the hidden `.step-N.partial` folders of interrupted saves are never considered).
public enum ModelLoading {
    /// A model ready for inference and where it came from.
    public struct Loaded {
        /// The folder the weights and `config.json` were read from.
        public let folder: URL
        public let config: any ModelConfig
        /// The whole model as one chunk.
        public let model: ModelChunk
    }

    /// Whether `folder` holds `config.json` and the model weights (single file or sharded index).
    public static func holdsModel(_ folder: URL) -> Bool {
        FileIO.isFile(folder.appendingPathComponent(Checkpoint.configFileName)) && holdsWeights(folder)
    }

    private static func holdsWeights(_ folder: URL) -> Bool {
        let base = Checkpoint.modelBaseName
        return FileIO.isFile(folder.appendingPathComponent("\(base).safetensors"))
            || FileIO.isFile(folder.appendingPathComponent("\(base).safetensors.index.json"))
    }

    /// The folder to read `config.json` and the weights from (see the type's documentation).
    public static func resolveFolder(_ url: URL) throws -> URL {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw TwoBPError("no checkpoint at \(url.path)")
        }
        guard FileIO.isDirectory(url) else {
            throw TwoBPError("\(url.path) is a file; --checkpoint takes a folder holding config.json and model.safetensors, or a training checkpoint folder (DIR or DIR/step-N)")
        }
        if holdsModel(url) { return url }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        let steps = names.compactMap { name -> (step: Int, url: URL)? in
            guard let step = stepNumber(ofFolderNamed: name) else { return nil }
            let folder = url.appendingPathComponent(name)
            return FileIO.isDirectory(folder) && holdsModel(folder) ? (step, folder) : nil
        }
        if let latest = steps.max(by: { $0.step < $1.step }) { return latest.url }
        var missing: [String] = []
        if !FileIO.isFile(url.appendingPathComponent(Checkpoint.configFileName)) { missing.append(Checkpoint.configFileName) }
        if !holdsWeights(url) { missing.append("\(Checkpoint.modelBaseName).safetensors") }
        throw TwoBPError("\(url.path) holds no model: it lacks \(missing.joined(separator: " and ")) and has no step-N folder holding config.json and model.safetensors")
    }

    /// Reads `config.json`, builds the model its `model_type` describes and fills every parameter
    /// and buffer from the weights. Errors name the file: unreadable or invalid config, corrupt
    /// safetensors, a missing tensor or one of the wrong shape. Tensors the model does not use are ignored.
    ///
    /// `beforeAllocating` sees the configuration before the model is built (a memory estimate).
    public static func load(from url: URL, beforeAllocating: (any ModelConfig) throws -> Void = { _ in }) throws -> Loaded {
        let folder = try resolveFolder(url)
        let configURL = folder.appendingPathComponent(Checkpoint.configFileName)
        let config = try ModelRegistry.decode(FileIO.read(configURL, what: "model configuration"), source: configURL.path)
        let weights = try SafeTensors.open(folder, baseName: Checkpoint.modelBaseName)
        try beforeAllocating(config)
        // The seed is irrelevant: every parameter is overwritten from the file.
        let model = try config.makeModel(seed: 0)
        do {
            try weights.load(into: model.parameters, buffers: model.buffers)
        } catch let error as TwoBPError {
            throw TwoBPError("\(error.message) (the weights do not match \(configURL.lastPathComponent))")
        }
        try checkFinite(model.parameters, buffers: model.buffers, source: folder.path)
        return Loaded(folder: folder, config: config, model: model)
    }

    /// A NaN or infinite weight makes every loss NaN and every sampled byte garbage, silently:
    /// loaded weights are refused instead, naming the tensor and its first bad element.
    public static func checkFinite(_ parameters: [Parameter], buffers: [Buffer], source: String) throws {
        func check(_ values: UnsafeBufferPointer<Float>, name: String) throws {
            if let index = values.firstIndex(where: { !$0.isFinite }) {
                throw TwoBPError("checkpoint \(source): tensor '\(name)' holds a non-finite value (\(values[index]) at element \(index))")
            }
        }
        for parameter in parameters {
            try check(UnsafeBufferPointer(start: parameter.value.pointer, count: parameter.value.count), name: parameter.name)
        }
        for buffer in buffers where buffer.dtype == .float32 {
            try check(UnsafeBufferPointer(buffer.floats), name: buffer.name)
        }
    }

    /// N of a folder named `step-N`, or nil.
    static func stepNumber(ofFolderNamed name: String) -> Int? {
        guard name.hasPrefix("step-") else { return nil }
        let digits = name.dropFirst(5)
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(digits)
    }
}
