import ArgumentParser
import Benchmarks
import Checkpoints
import Data
import Foundation
import Models
import Tensor
import Training
/// `twobp generate`: sample text from a trained checkpoint, byte by byte.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text from a checkpoint, streaming it as it is sampled.",
        discussion: """
            Byte-level: the prompt's UTF-8 bytes are the first tokens, and each step feeds the last \
            max_position_embeddings tokens to the model and draws the next byte from its logits \
            (softmax at --temperature, over the --top-k most likely bytes). The same --seed gives the same text.
            --checkpoint takes a folder holding config.json and model.safetensors (as written by Hugging Face, \
            or a training checkpoint's DIR/step-N) or a training checkpoint DIR, meaning its latest step.
            """)

    @Option(help: "Checkpoint: a folder with config.json + model.safetensors, or a training checkpoint DIR (its latest step-N).")
    var checkpoint: String

    @Option(help: "Text to continue (printed first).")
    var prompt: String

    @Option(parsing: .unconditional, help: "Bytes to generate.")
    var tokens = 200

    @Option(parsing: .unconditional, help: "Sampling temperature; 0 = greedy (argmax).")
    var temperature = 0.8

    @Option(name: .customLong("top-k"), parsing: .unconditional, help: "Sample only among the K most likely bytes (default: all).")
    var topK: Int?

    @Option(parsing: .unconditional, help: "Seed of the sampler.")
    var seed: UInt64 = 0

    func validate() throws {
        guard !prompt.isEmpty else { throw ValidationError("--prompt must not be empty: generation needs at least one byte to start from") }
        guard tokens >= 1 else { throw ValidationError("--tokens must be at least 1, got \(tokens)") }
        guard temperature >= 0, temperature.isFinite else {
            throw ValidationError("--temperature must be a number >= 0 (0 = greedy), got \(temperature)")
        }
        if let topK, topK < 1 { throw ValidationError("--top-k must be at least 1, got \(topK)") }
    }

    func run() throws {
        // One device: every core for the kernels.
        Parallel.setThreads(ProcessInfo.processInfo.activeProcessorCount)
        let loaded = try ModelLoading.load(from: URL(fileURLWithPath: checkpoint)) { config in
            try MemoryEstimate.inference(model: config, batchSize: 1, sampleLength: config.defaultSampleLength).check(limit: nil, command: "generate")
        }
        guard let model = loaded.model as? CausalLanguageModel else {
            throw TwoBPError("\(loaded.folder.path) holds a \(type(of: loaded.config).modelType) model, which does not generate text")
        }
        guard model.vocabularySize >= ByteTokenizer.vocabularySize else {
            throw TwoBPError("\(loaded.folder.path): vocab_size \(model.vocabularySize) is smaller than the byte tokenizer's \(ByteTokenizer.vocabularySize) tokens")
        }
        let generator = try TextGenerator(model: model, options: SamplingOptions(temperature: temperature, topK: topK, seed: seed))
        let output = FileHandle.standardOutput
        // FileHandle writes go straight to the file descriptor: each piece appears at once.
        output.write(Data(prompt.utf8))
        var stream = UTF8Stream()
        try generator.generate(prompt: ByteTokenizer.encode(prompt), count: tokens) { token in
            let text = stream.append(UInt8(truncatingIfNeeded: token))
            if !text.isEmpty { output.write(Data(text.utf8)) }
        }
        output.write(Data((stream.flush() + "\n").utf8))
    }
}
