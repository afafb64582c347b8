import Files
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

    /// The `--summary` file: what ran, how fast, how much memory, every loss term at the end.
    public struct Summary: Encodable {
        public struct Rank: Encodable {
            var rank: Int
            var peakBytes: Int
            var busySeconds: Double
            var bubbleRatio: Double
            enum CodingKeys: String, CodingKey {
                case rank, peakBytes = "peak_bytes", busySeconds = "busy_seconds", bubbleRatio = "bubble_ratio"
            }
        }
        public struct Validation: Encodable {
            var step: Int
            var loss: Double
        }
        var model: String
        var schedule: String
        var stages: Int
        var microBatches: Int?
        var steps: Int
        var throughput: Double
        var throughputUnit: String
        var finalLoss: Double?
        var valLoss: Double?
        var finalTerms: [String: Double]
        var validationTerms: [String: Double]?
        var peakBytes: Int
        var stepTimeSeconds: Double
        var bubbleRatio: [Double]
        var peakBytesPerRank: [Int]
        var ranks: [Rank]
        var validation: [Validation]

        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: JSONKey.self)
            try c.encode(model, forKey: JSONKey("model"))
            try c.encode(schedule, forKey: JSONKey("schedule"))
            try c.encode(stages, forKey: JSONKey("stages"))
            try c.encode(microBatches, forKey: JSONKey("micro_batches"))
            try c.encode(steps, forKey: JSONKey("steps"))
            try c.encodeFinite(throughput, forKey: JSONKey("\(throughputUnit)_per_second"))
            try c.encode(finalLoss.flatMap { $0.isFinite ? $0 : nil }, forKey: JSONKey("final_loss"))
            try c.encode(valLoss.flatMap { $0.isFinite ? $0 : nil }, forKey: JSONKey("val_loss"))
            try c.encode(finalTerms.filter { $0.value.isFinite }, forKey: JSONKey("final_terms"))
            try c.encode(validationTerms?.filter { $0.value.isFinite }, forKey: JSONKey("validation_terms"))
            try c.encode(peakBytes, forKey: JSONKey("peak_bytes"))
            try c.encode(stepTimeSeconds, forKey: JSONKey("step_time_seconds"))
            try c.encode(bubbleRatio, forKey: JSONKey("bubble_ratio"))
            try c.encode(peakBytesPerRank, forKey: JSONKey("peak_bytes_per_rank"))
            try c.encode(ranks, forKey: JSONKey("ranks"))
            try c.encode(validation, forKey: JSONKey("validation"))
        }
    }

    public var summary: Summary {
        let names = settings.model.lossTerms
        return Summary(
            model: settings.modelName,
            schedule: settings.pipeline.kind.rawValue + (settings.pipeline.twoBP ? "+2bp" : ""),
            stages: settings.pipeline.ranks,
            microBatches: try? settings.pipeline.resolved().microBatches,
            steps: outcome.losses.count,
            throughput: outcome.throughput, throughputUnit: outcome.unit.name,
            finalLoss: outcome.losses.last, valLoss: outcome.validationLoss,
            finalTerms: Dictionary(uniqueKeysWithValues: zip(names, outcome.lastLossTerms).map { ($0, $1) }),
            validationTerms: outcome.validationTerms.map { Dictionary(uniqueKeysWithValues: zip(names, $0).map { ($0, $1) }) },
            peakBytes: outcome.peakBytes.max() ?? 0,
            stepTimeSeconds: outcome.stepTimeSeconds,
            bubbleRatio: outcome.bubbleRatio,
            peakBytesPerRank: outcome.peakBytes,
            ranks: outcome.peakBytes.indices.map {
                Summary.Rank(rank: $0, peakBytes: outcome.peakBytes[$0], busySeconds: outcome.busySeconds[$0],
                             bubbleRatio: outcome.bubbleRatio[$0])
            },
            validation: outcome.validationHistory.map { Summary.Validation(step: $0.step, loss: $0.loss) })
    }

    public func write() throws {
        if let url = settings.summary {
            try FileIO.createDirectory(url.deletingLastPathComponent())
            try FileIO.writeOutput(url, what: "--summary", data: JSONLines.pretty(summary))
        }
        if let url = settings.timeline {
            try FileIO.createDirectory(url.deletingLastPathComponent())
            try FileIO.writeOutput(url, what: "--timeline", text: ChromeTrace.render(outcome.lastStepTimeline, name: settings.pipeline.description))
        }
        let names = settings.model.lossTerms
        guard !outcome.lastLossTerms.isEmpty else {
            print("done: nothing to train, the run is already at step \(outcome.losses.count) of \(settings.steps) (a larger --steps continues it)")
            return
        }
        let loss = LossTerms.describe(names, outcome.lastLossTerms)
        let validation = outcome.validationTerms.map { "validation " + LossTerms.describe(names, $0) } ?? "validation loss -"
        let bubbles = outcome.bubbleRatio.map { String(format: "%.2f", $0) }.joined(separator: " ")
        print("done: \(loss), \(validation), \(Int(outcome.throughput)) \(outcome.unit.name)/s, step \(String(format: "%.3f", outcome.stepTimeSeconds)) s, bubble ratio per rank [\(bubbles)], peak \((outcome.peakBytes.max() ?? 0) >> 20) MiB")
    }
}

/// Loss terms for people: `loss 2.1234, mlm_loss 1.9, nsp_accuracy 0.7812`.
enum LossTerms {
    static func describe(_ names: [String], _ values: [Double]) -> String {
        zip(names, values).map { "\($0) \(String(format: "%.4f", $1))" }.joined(separator: ", ")
    }
}
