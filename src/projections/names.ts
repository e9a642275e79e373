// The data model's names and limits live in src/util/names.ts (the client checks them too); re-exported
// here for the projections that validate entries.

export * from '../util/names';
