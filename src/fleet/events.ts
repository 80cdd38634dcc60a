// What the fleet's shared sending reports: published on the 'm2m-session-proxy:fleet' diagnostics channel
// (src/events.ts).

export interface FleetEvent {
  type: 'info' | 'warning'
  message: string
}

export type PublishFleetEvent = (event: FleetEvent) => void
