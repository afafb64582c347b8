import Foundation
import Layers
import Models
import Schedules
import Tensor

/// Executes one rank's actions of a lowered schedule against that rank's model chunks.
///
/// The runner holds no policy: the order of forwards, p1 (`I`), p2 (`W`, `W*`)
/// and fused backwards (`B`), and where sends and receives happen, all come
/// from the schedule. It records the start and end of every action, so the
/// measured timeline is the same type the simulator predicts.
public final class StageRunner {
    public let rank: Int
    public let schedule: Schedule
    /// chunks[c] holds virtual stage schedule.stage(rank: rank, chunk: c).
    public let chunks: [ModelChunk]
    public let transport: Transport
    /// The rank's meter: every tensor the runner's thread allocates is charged to it.
    public let meter: MemoryMeter

    /// Tensors waiting to be consumed, keyed by (local chunk, micro-batch).
    private var inputActivations: [Slot: Tensor] = [:]
    private var outputActivations: [Slot: Tensor] = [:]
    private var inputGradients: [Slot: Tensor] = [:]
    private var outputGradients: [Slot: Tensor] = [:]

    struct Slot: Hashable {
        let chunk: Int
        let microBatch: Int
    }

    public init(rank: Int, schedule: Schedule, chunks: [ModelChunk], transport: Transport, meter: MemoryMeter) {
        precondition(chunks.count == schedule.chunksPerRank, "rank \(rank) has \(chunks.count) chunks, schedule wants \(schedule.chunksPerRank)")
        self.rank = rank
        self.schedule = schedule
        self.chunks = chunks
        self.transport = transport
        self.meter = meter
    }

    /// What one step on this rank produced.
    public struct StepResult {
        /// The loss terms (`ModelConfig.lossTerms`) summed over the micro-batches whose loss this
        /// rank computed; empty on ranks that compute none.
        public var loss: [Double] = []
        public var events: [TimelineEvent] = []
    }

    /// Runs this rank's actions for one step over `microBatches` (indexed by micro-batch id).
    /// `clockOrigin` is the step's start in `DispatchTime` nanoseconds, shared by all ranks of a process.
    public func runStep(microBatches: [any MicroBatch], clockOrigin: UInt64) throws -> StepResult {
        try MemoryMeter.withCurrent(meter) {
            var result = StepResult()
            let actions = schedule.actions[rank]
            try postReceivesAhead(actions, microBatches: microBatches)
            for action in actions {
                let start = DispatchTime.now().uptimeNanoseconds
                try execute(action, microBatches: microBatches, loss: &result.loss)
                let end = DispatchTime.now().uptimeNanoseconds
                result.events.append(TimelineEvent(
                    rank: rank, action: action,
                    start: Double(start &- clockOrigin) / 1e9, end: Double(end &- clockOrigin) / 1e9))
            }
            try transport.waitForSends()
            guard inputActivations.isEmpty, outputActivations.isEmpty, inputGradients.isEmpty, outputGradients.isEmpty else {
                throw TwoBPError("rank \(rank): the step ended with tensors that no action consumed")
            }
            return result
        }
    }

    private func execute(_ action: Action, microBatches: [any MicroBatch], loss: inout [Double]) throws {
        let c = action.chunk
        let stage = schedule.stage(rank: rank, chunk: c)
        guard let m = action.microBatch else {
            try chunks[c].backwardWeight(.allPending)
            return
        }
        guard microBatches.indices.contains(m) else {
            throw TwoBPError("rank \(rank): action \(action) names micro-batch \(m) of \(microBatches.count)")
        }
        let slot = Slot(chunk: c, microBatch: m)
        switch action.kind {
        case .forward:
            let input = stage == 0 ? nil : try takeOrFail(&inputActivations, slot, "the input activation of \(action)")
            switch try chunks[c].forward(input, batch: microBatches[m], microBatch: m) {
            case .activation(let output):
                try deliver(output, slot: slot, toStage: stage + 1, kind: .activation)
            case .loss(let terms):
                loss = loss.isEmpty ? terms : zip(loss, terms).map(+)
            }
        case .backwardInput, .backwardFull:
            let isLast = stage == schedule.virtualStages - 1
            let gradient = isLast ? nil : try takeOrFail(&inputGradients, slot, "the output gradient of \(action)")
            let inputGradient = try chunks[c].backwardInput(gradient, microBatch: m)
            if action.kind == .backwardFull {
                try chunks[c].backwardWeight(.microBatch(m))
            }
            if let inputGradient {
                try deliver(inputGradient, slot: slot, toStage: stage - 1, kind: .gradient)
            }
        case .backwardWeight:
            try chunks[c].backwardWeight(.microBatch(m))
        case .sendActivation:
            let tensor = try takeOrFail(&outputActivations, slot, "the activation \(action) sends")
            let next = schedule.location(ofStage: stage + 1)
            try transport.send(tensor, to: next.rank, tag: MessageTag(kind: .activation, microBatch: m, stage: stage + 1))
        case .sendGradient:
            let tensor = try takeOrFail(&outputGradients, slot, "the gradient \(action) sends")
            let previous = schedule.location(ofStage: stage - 1)
            try transport.send(tensor, to: previous.rank, tag: MessageTag(kind: .gradient, microBatch: m, stage: stage - 1))
        case .receiveActivation:
            let source = schedule.location(ofStage: stage - 1).rank
            inputActivations[slot] = try transport.receive(
                from: source, tag: MessageTag(kind: .activation, microBatch: m, stage: stage),
                shape: try receivedShape(action, microBatches[m]))
        case .receiveGradient:
            let source = schedule.location(ofStage: stage + 1).rank
            inputGradients[slot] = try transport.receive(
                from: source, tag: MessageTag(kind: .gradient, microBatch: m, stage: stage),
                shape: try receivedShape(action, microBatches[m]))
        }
    }

    /// Hands a produced tensor to the chunk on this rank that consumes it, or parks it for its send action.
    private func deliver(_ tensor: Tensor, slot: Slot, toStage consumer: Int, kind: Flow) throws {
        let location = schedule.location(ofStage: consumer)
        if location.rank == rank {
            let local = Slot(chunk: location.chunk, microBatch: slot.microBatch)
            switch kind {
            case .activation: inputActivations[local] = tensor
            case .gradient: inputGradients[local] = tensor
            }
        } else {
            switch kind {
            case .activation: outputActivations[slot] = tensor
            case .gradient: outputGradients[slot] = tensor
            }
        }
    }

    /// Which way a tensor between stages flows.
    private enum Flow { case activation, gradient }

    private func takeOrFail(_ store: inout [Slot: Tensor], _ slot: Slot, _ what: String) throws -> Tensor {
        guard let tensor = store.removeValue(forKey: slot) else {
            throw TwoBPError("rank \(rank): \(what) is missing (schedule order or lowering is wrong)")
        }
        return tensor
    }

    /// The shape a receive action's tensor has: the chunk's input activation, or the gradient of
    /// its output (the model decides; a ResNet's change at every boundary).
    private func receivedShape(_ action: Action, _ batch: any MicroBatch) throws -> [Int] {
        let chunk = chunks[action.chunk]
        let shape = action.kind == .receiveActivation ? try chunk.inputShape(for: batch) : try chunk.outputShape(for: batch)
        guard let shape else { throw TwoBPError("rank \(rank): \(action) receives into a chunk that takes no such tensor") }
        return shape
    }

    /// Tells the transport every receive of the step up front, so it can post them early (MPI).
    private func postReceivesAhead(_ actions: [Action], microBatches: [any MicroBatch]) throws {
        for action in actions {
            guard let m = action.microBatch, microBatches.indices.contains(m) else { continue }
            let stage = schedule.stage(rank: rank, chunk: action.chunk)
            switch action.kind {
            case .receiveActivation:
                transport.expect(from: schedule.location(ofStage: stage - 1).rank,
                                 tag: MessageTag(kind: .activation, microBatch: m, stage: stage),
                                 shape: try receivedShape(action, microBatches[m]))
            case .receiveGradient:
                transport.expect(from: schedule.location(ofStage: stage + 1).rank,
                                 tag: MessageTag(kind: .gradient, microBatch: m, stage: stage),
                                 shape: try receivedShape(action, microBatches[m]))
            case .forward, .backwardInput, .backwardWeight, .backwardFull, .sendActivation, .sendGradient:
                break
            }
        }
    }
}
