import ArgumentParser
import Benchmarks
import Checkpoints
import Data
import Foundation
import Models
import Tensor
import Training

/// `twobp eval`: a checkpoint's loss on data it was not trained on.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "A checkpoint's loss: nats per byte over a text file, or every loss term on held-out data.",
        discussion: """
            Text models (LLaMa, Mamba): the file, from its first byte (the whole file, not training's held-out \
            split), is cut into consecutive non-overlapping windows of --seq-len + 1 bytes; a partial last window \
            is dropped. In each window the model predicts bytes 1...L from the bytes before them. The first \
            --max-windows windows are evaluated, --batch-size at a time, through the inference path that saves nothing.
            Other models (BERT, ResNet): the held-out part of their data source (what training validates on), \
            --batch-size samples at a time, at most --max-windows batches; every loss term is reported \
            (for BERT masked-LM loss and next-sentence accuracy, for ResNet loss and accuracy).
            """)

    @Option(help: "Checkpoint: a folder with config.json + model.safetensors, or a training checkpoint DIR (its latest step-N).")
    var checkpoint: String

    @Option(help: "Data (default: the model family's, e.g. data/shakespeare.txt, else ../shared/data/shakespeare.txt).")
    var data: String?

    @Option(name: .customLong("seq-len"), parsing: .unconditional, help: "Tokens per window or sequence (default: the model's longest).")
    var sequenceLength: Int?

    @Option(name: .customLong("max-windows"), parsing: .unconditional, help: "Evaluate only the first K windows, or K held-out batches (default: all).")
    var maxWindows: Int?

    @Option(name: .customLong("batch-size"), parsing: .unconditional, help: "Windows (samples) per forward pass.")
    var batchSize = 8

    @Option(help: "Also write the result as JSON to this file.")
    var json: String?

    @Flag(name: .customLong("training-mode"), help: "Held-out data only: run each batch through the training forward (batch norms on the batch's own statistics, as a step of one micro-batch), the loss a reference library's model.train() gives.")
    var trainingMode = false

    func validate() throws {
        if let sequenceLength, sequenceLength < 1 { throw ValidationError("--seq-len must be at least 1, got \(sequenceLength)") }
        if let maxWindows, maxWindows < 1 { throw ValidationError("--max-windows must be at least 1, got \(maxWindows)") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
    }

    func run() throws {
        // One device: every core for the kernels.
        Parallel.setThreads(ProcessInfo.processInfo.activeProcessorCount)
        let loaded = try ModelLoading.load(from: URL(fileURLWithPath: checkpoint)) { config in
            try MemoryEstimate.inference(model: config, batchSize: batchSize, sampleLength: sequenceLength ?? config.defaultSampleLength)
                .check(limit: nil, command: "eval")
        }
        let url = data.map { URL(fileURLWithPath: $0) } ?? DataSources.defaultFile(for: loaded.config.dataKind)
        let length = sequenceLength ?? loaded.config.defaultSampleLength
        guard let model = loaded.model as? CausalLanguageModel, !trainingMode else {
            return try evaluateHeldOut(loaded, data: url, sampleLength: length)
        }
        guard length <= model.contextLength else {
            throw TwoBPError("--seq-len \(length) exceeds the model's context of \(model.contextLength) tokens")
        }
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

    /// The mean of every loss term over the data source's held-out batches.
    private func evaluateHeldOut(_ loaded: ModelLoading.Loaded, data url: URL, sampleLength: Int) throws {
        try loaded.config.checkSampleLength(sampleLength)
        let source = try DataSources.open(url, for: loaded.config, sampleLength: sampleLength)
        let result = try Evaluation.evaluateHeldOut(model: loaded.model, terms: loaded.config.lossTerms, source: source,
                                                    batchSize: batchSize, maxBatches: maxWindows, trainingMode: trainingMode)
        print("checkpoint \(loaded.folder.path), data \(source.source)\(trainingMode ? ", training forward" : "")")
        print(result.terms.map { "\($0.name) \(String(format: "%.6f", $0.value))" }.joined(separator: ", ")
            + " over \(result.batches) held-out batches of \(batchSize)")
        if let json {
            try result.writeJSON(to: URL(fileURLWithPath: json))
        }
    }
}
