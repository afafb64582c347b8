import Foundation
import Models
import Tensor
import Training
import XCTest
import Checkpoints

/// A LLaMa small enough for debug-build tests: 2 layers of width 16, the byte vocabulary, and
/// `maxPositions` positions. A wide initialisation makes its next-byte distributions far from
/// uniform, so greedy and sampled texts are not decided by rounding.
func inferenceTestConfig(maxPositions: Int = 16) -> LlamaConfig {
    LlamaConfig(hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 2, numAttentionHeads: 2, numKeyValueHeads: 1,
                vocabSize: 256, maxPositionEmbeddings: maxPositions, initializerRange: 0.3)
}

/// Writes `model` as a Hugging Face style folder: `config.json` and `model.safetensors`, nothing else.
func writeInferenceFolder(_ model: LlamaModel, to folder: URL) throws {
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    try SafeTensors.write(model.parameters.map { (name: $0.name, tensor: $0.value) },
                          to: folder.appendingPathComponent("model.safetensors"))
    try model.config.jsonData().write(to: folder.appendingPathComponent("config.json"))
}

/// Index of the first maximum of `values`.
func firstArgmax(_ values: [Float]) -> Int {
    var best = 0
    for i in values.indices where values[i] > values[best] { best = i }
    return best
}

/// Logits [vocabularySize] of the position `position` of `tokens` (one sequence), read from `model.logits`.
func logitsRow(_ model: CausalLanguageModel, tokens: [Int32], position: Int) throws -> [Float] {
    let logits = try model.logits(tokens: tokens, batchSize: 1, sequenceLength: tokens.count)
    let vocabulary = model.vocabularySize
    XCTAssertEqual(logits.shape, [1, tokens.count, vocabulary])
    return Array(logits.toArray()[(position * vocabulary)..<((position + 1) * vocabulary)])
}
