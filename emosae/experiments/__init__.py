"""The paper's behavioural experiments at small scale: reading emotions out at the
reply (`readout`) and the five experiments (`behaviour`: scenarios, intensity,
preferences, steered generation, choice under pressure). Each returns JSON-able
numbers; the pipeline saves them and the report draws them."""
