"""What measures the device and its clocks: which device, its peaks (table and measured),
FLOPs, timers, energy, NVML, the GPU watch, and the software versions a figure depends on."""
