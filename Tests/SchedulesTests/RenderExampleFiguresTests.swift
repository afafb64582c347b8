import Foundation
@testable import Schedules

/// The example figures under docs/figures: the paper's Figure 1 set
/// (schedules with and without 2BP, from equal costs F = I = W = 1).
enum ExampleFigures {
    static func write(to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let (ranks, microBatches) = (4, 8)
        let costs = HandBuilt.equalCosts
        let pairs: [(String, Schedule, Schedule)] = [
            ("gpipe", HandBuilt.gpipe(ranks: ranks, microBatches: microBatches),
             HandBuilt.gpipe(ranks: ranks, microBatches: microBatches, twoBP: true)),
            ("1f1b", HandBuilt.oneFOneB(ranks: ranks, microBatches: microBatches),
             HandBuilt.oneFOneB(ranks: ranks, microBatches: microBatches, twoBP: true)),
        ]
        for (name, plain, split) in pairs {
            let panels = [TimelinePanel(label: "\(name)", timeline: try Simulator.simulate(plain, costs: costs)),
                          TimelinePanel(label: "\(name) + 2BP", timeline: try Simulator.simulate(split, costs: costs))]
            let svg = TimelineSVG.renderStacked(panels, title: "\(name), \(ranks) ranks, \(microBatches) micro-batches, F = I = W = 1")
            try svg.write(to: directory.appendingPathComponent("\(name).svg"), atomically: true, encoding: .utf8)
        }
    }
}
