import ArgumentParser
import Foundation
import Models
import Tensor
/// Which model and which data: shared by train, verify and bench.
struct ModelOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Model: \(ModelRegistry.names.joined(separator: ", ")), or a path to a config.json (Hugging Face / torchvision style, dispatched on model_type)."))
    var model = "llama-tiny"

    @Option(name: .customLong("seq-len"), parsing: .unconditional, help: "Tokens per sequence (default: the model's longest, max_position_embeddings).")
    var sequenceLength: Int?

    @Option(parsing: .unconditional, help: "Seed of weight initialisation and data sampling.")
    var seed: UInt64 = 1234

    mutating func validate() throws {
        if let sequenceLength, sequenceLength < 1 { throw ValidationError("--seq-len must be at least 1, got \(sequenceLength)") }
    }

    /// The resolved configuration and sample length, checked against each other.
    func resolve() throws -> (config: any ModelConfig, sampleLength: Int) {
        let config = try ModelRegistry.resolve(model)
        let length = sequenceLength ?? config.defaultSampleLength
        try config.checkSampleLength(length)
        return (config, length)
    }
}
