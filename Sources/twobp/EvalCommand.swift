import ArgumentParser
import Benchmarks
import Checkpoints
import Data
import Foundation
import Models
import Tensor
import Training
/// `twobp eval`: the mean next-byte cross-entropy of a checkpoint over a text file.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Mean cross-entropy (nats per byte) of a checkpoint over a text file.",
        discussion: """
            The file, from its first byte (the whole file, not training's held-out split), is cut into \
            consecutive non-overlapping windows of --seq-len + 1 bytes; a partial last window is dropped. \
            In each window the model predicts bytes 1...L from the bytes before them. The first --max-windows \
            windows are evaluated, --batch-size at a time, through the inference path that saves nothing.
            """)

    @Option(help: "Checkpoint: a folder with config.json + model.safetensors, or a training checkpoint DIR (its latest step-N).")
    var checkpoint: String

    @Option(help: "Text file (default: data/shakespeare.txt, else ../shared/data/shakespeare.txt).")
    var data: String?

    @Option(name: .customLong("seq-len"), parsing: .unconditional, help: "Bytes predicted per window (default: the model's max_position_embeddings).")
    var sequenceLength: Int?

    @Option(name: .customLong("max-windows"), parsing: .unconditional, help: "Evaluate only the first K windows (default: all).")
    var maxWindows: Int?

    @Option(name: .customLong("batch-size"), parsing: .unconditional, help: "Windows per forward pass.")
    var batchSize = 8

    @Option(help: "Also write {\"loss\", \"windows\", \"tokens\", \"sequence_length\"} to this JSON file.")
    var json: String?

    static let defaultDataPaths = ["data/shakespeare.txt", "../shared/data/shakespeare.txt"]

    func validate() throws {
        if let sequenceLength, sequenceLength < 1 { throw ValidationError("--seq-len must be at least 1, got \(sequenceLength)") }
        if let maxWindows, maxWindows < 1 { throw ValidationError("--max-windows must be at least 1, got \(maxWindows)") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
    }

    func run() throws {
        guard let dataPath = data ?? Self.defaultDataPaths.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw TwoBPError("no --data given and neither \(Self.defaultDataPaths.joined(separator: " nor ")) exists here (scripts/setup-data.sh builds data/shakespeare.txt)")
        }
        let loaded = try ModelLoading.load(from: URL(fileURLWithPath: checkpoint))
        guard let model = loaded.model as? CausalLanguageModel else {
            throw TwoBPError("\(loaded.folder.path) holds a \(type(of: loaded.config).modelType) model, which does not predict text")
        }
        let length = sequenceLength ?? loaded.config.defaultSampleLength
        guard length <= model.contextLength else {
            throw TwoBPError("--seq-len \(length) exceeds the model's context of \(model.contextLength) tokens")
        }
        let url = URL(fileURLWithPath: dataPath)
        let bytes = try Evaluation.readData(url)
        let result = try Evaluation.evaluate(model: model, bytes: bytes, sequenceLength: length, maxWindows: maxWindows,
                                             batchSize: batchSize, source: "data file \(url.path)") { done, total in
            // Progress on a terminal only, so redirected output stays the result alone.
            if isatty(STDERR_FILENO) != 0 {
                FileHandle.standardError.write(Data("\r  \(done)/\(total) windows\(done == total ? "\r\u{1B}[K" : "")".utf8))
            }
        }
        print("""
            checkpoint \(loaded.folder.path), data \(url.path)
            loss \(String(format: "%.6f", result.loss)) nats/byte (\(String(format: "%.4f", result.bitsPerByte)) bits/byte, \
            perplexity \(String(format: "%.4f", result.perplexity))) over \(result.windows) windows, \(result.tokens) bytes, \
            sequence length \(result.sequenceLength)
            """)
        if let json {
            try result.writeJSON(to: URL(fileURLWithPath: json))
        }
    }
}
