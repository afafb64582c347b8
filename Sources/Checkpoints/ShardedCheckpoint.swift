import Files
import Foundation
import Pipeline
import Tensor

/// How a pipeline's checkpoint reaches the disk.
public enum CheckpointLayout: String, CaseIterable, Sendable {
    /// Rank 0 gathers every rank's tensors and writes one `model.safetensors`; works without a shared filesystem.
    case single
    /// Every rank writes its own stage's tensors as one shard, rank 0 writes the index
    /// (`model.safetensors.index.json`, Hugging Face's sharded form); the ranks must share the checkpoint folder.
    case perStage = "per-stage"
}

/// The `per-stage` layout: all ranks write at once into rank 0's partial folder, and
/// rank 0 publishes it with one rename, so an interrupted save leaves the previous
/// checkpoint as it was.
public enum ShardedCheckpoint {
    /// Collective: every rank calls it with its own tensors; returns the step folder on rank 0.
    @discardableResult
    public static func save(in directory: URL, model: [StoredTensor], optimizer: [StoredTensor],
                            optimizerMetadata: [String: String], config: Data, state: Data,
                            transport: Transport) throws -> URL? {
        let isRoot = transport.rank == 0
        let step = try Checkpoint.savedStep(state)
        if isRoot { _ = try Checkpoint.beginSave(in: directory, step: step) }
        try transport.barrier()  // the partial folder exists before anyone writes into it
        let partial = Checkpoint.partialFolder(in: directory, step: step)
        guard FileIO.isDirectory(partial) else {
            throw TwoBPError("rank \(transport.rank) cannot see \(partial.path): the per-stage checkpoint layout needs a folder every rank shares (use --checkpoint-layout single)")
        }
        var written: [String: [(name: String, bytes: Int)]] = [:]
        for (baseName, tensors, metadata) in [(Checkpoint.modelBaseName, model, SafeTensors.defaultMetadata),
                                              (Checkpoint.optimizerBaseName, optimizer, optimizerMetadata)] {
            let file = SafeTensors.shardFileName(baseName: baseName, index: transport.rank, count: transport.worldSize)
            try SafeTensors.write(tensors, to: partial.appendingPathComponent(file), metadata: metadata)
            written[baseName] = tensors.map { ($0.name, $0.bytes.count) }
        }
        let listing = try JSONEncoder().encode(written.mapValues { $0.map { [$0.name, String($0.bytes)] } })
        let listings = try transport.gather(Array(listing), root: 0)
        var published: URL?
        if let listings {
            let decoded = try listings.map { try JSONDecoder().decode([String: [[String]]].self, from: Data($0)) }
            for baseName in [Checkpoint.modelBaseName, Checkpoint.optimizerBaseName] {
                let shards = decoded.enumerated().map { rank, files in
                    (file: SafeTensors.shardFileName(baseName: baseName, index: rank, count: decoded.count),
                     tensors: (files[baseName] ?? []).map { (name: $0[0], bytes: Int($0[1]) ?? 0) })
                }
                try SafeTensors.writeIndex(shards, to: partial, baseName: baseName)
            }
            published = try Checkpoint.finishSave(partial, in: directory, config: config, state: state)
        }
        try transport.barrier()  // nobody moves on before the checkpoint is published
        return published
    }
}
