import Checkpoints
import Foundation
@testable import Training

/// Saving and restoring several stages' optimizers the way the trainer's single and per-stage
/// layouts do, for the checkpoint tests.
extension Checkpoint {
    /// Every stage's weights and AdamW state: all in one file, or shard i holding stage i.
    @discardableResult
    static func save(in directory: URL, optimizers: [AdamW], config: Data, state: TrainerState,
                     shardPerStage: Bool = false) throws -> URL {
        let models = optimizers.map { StoredTensor.records($0.parameters.map { (name: $0.name, tensor: $0.value) }, []) }
        let moments = optimizers.map { $0.stateTensors().map(StoredTensor.init) }
        return try save(in: directory, model: shardPerStage ? models : [models.flatMap { $0 }],
                        optimizer: shardPerStage ? moments : [moments.flatMap { $0 }],
                        optimizerMetadata: optimizers[0].stateMetadata, config: config, state: state.encoded())
    }
}

extension LoadedCheckpoint {
    /// The trainer state as the trainer decodes it.
    var trainerState: TrainerState {
        get throws { try TrainerState.decode(state) }
    }

    /// Copies the weights into each optimizer's parameters and restores its moments and step.
    func restore(into optimizers: [AdamW]) throws {
        for optimizer in optimizers {
            try model.load(into: optimizer.parameters)
            try optimizer.loadState(from: self.optimizer)
        }
    }
}

extension Checkpoint {
    /// Named Float32 tensors and a trainer state, as the tests build them.
    @discardableResult
    static func save(in directory: URL, model: [[NamedTensor]], optimizer: [[NamedTensor]], optimizerMetadata: [String: String],
                     config: Data, state: TrainerState) throws -> URL {
        try save(in: directory, model: model.map { $0.map(StoredTensor.init) }, optimizer: optimizer.map { $0.map(StoredTensor.init) },
                 optimizerMetadata: optimizerMetadata, config: config, state: state.encoded())
    }
}

extension SafeTensors {
    /// `writeSharded` of named Float32 tensors.
    @discardableResult
    static func writeSharded(_ shards: [[NamedTensor]], to directory: URL) throws -> [URL] {
        try writeSharded(shards.map { $0.map(StoredTensor.init) }, to: directory)
    }
}
