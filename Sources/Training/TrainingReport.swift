import Foundation
import Schedules

/// The end of a run on rank 0: the summary JSON, the timeline file and the closing lines.
public struct TrainingReport {
    public let settings: TrainingSettings
    public let outcome: TrainingOutcome

    public init(settings: TrainingSettings, outcome: TrainingOutcome) {
        self.settings = settings
        self.outcome = outcome
    }

    public var summary: JSONValue {
        let ranks = outcome.peakBytes.indices.map { rank -> JSONValue in
            .object([(key: "rank", value: .int(rank)),
                     (key: "peak_bytes", value: .int(outcome.peakBytes[rank])),
                     (key: "busy_seconds", value: .double(outcome.busySeconds[rank])),
                     (key: "bubble_ratio", value: .double(outcome.bubbleRatio[rank]))])
        }
        return .object([
            (key: "model", value: .string(settings.modelName)),
            (key: "schedule", value: .string(settings.pipeline.kind.rawValue + (settings.pipeline.twoBP ? "+2bp" : ""))),
            (key: "stages", value: .int(settings.pipeline.ranks)),
            (key: "micro_batches", value: (try? settings.pipeline.resolved().microBatches).map(JSONValue.int) ?? .null),
            (key: "steps", value: .int(outcome.losses.count)),
            (key: "tokens_per_second", value: .double(outcome.tokensPerSecond)),
            (key: "final_loss", value: outcome.losses.last.map(JSONValue.double) ?? .null),
            (key: "val_loss", value: outcome.validationLoss.map(JSONValue.double) ?? .null),
            (key: "peak_bytes", value: .int(outcome.peakBytes.max() ?? 0)),
            (key: "step_time_seconds", value: .double(outcome.stepTimeSeconds)),
            (key: "bubble_ratio", value: .array(outcome.bubbleRatio.map(JSONValue.double))),
            (key: "peak_bytes_per_rank", value: .array(outcome.peakBytes.map(JSONValue.int))),
            (key: "ranks", value: .array(ranks)),
            (key: "validation", value: .array(outcome.validationHistory.map {
                .object([(key: "step", value: .int($0.step)), (key: "loss", value: .double($0.loss))])
            })),
        ])
    }

    public func write() throws {
        if let url = settings.summary { try RunSummary.write(summary, to: url) }
        if let url = settings.timeline {
            try Data(ChromeTrace.render(outcome.lastStepTimeline, name: settings.pipeline.description).utf8).write(to: url)
        }
        let loss = outcome.losses.last.map { String(format: "%.4f", $0) } ?? "-"
        let validation = outcome.validationLoss.map { String(format: "%.4f", $0) } ?? "-"
        let bubbles = outcome.bubbleRatio.map { String(format: "%.2f", $0) }.joined(separator: " ")
        print("done: loss \(loss), validation loss \(validation), \(Int(outcome.tokensPerSecond)) tokens/s, step \(String(format: "%.3f", outcome.stepTimeSeconds)) s, bubble ratio per rank [\(bubbles)], peak \((outcome.peakBytes.max() ?? 0) >> 20) MiB")
    }
}
